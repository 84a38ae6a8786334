"""Prometheus exposition for both daemons: ``/metrics`` over HTTP, or a node_exporter textfile.

The figures come from ``prometheus_client`` collectors that read each daemon's own counters when asked (a
scrape, a textfile write), so the packet path pays nothing for them. Two ways out, either or both:

- ``listen`` (``HOST:PORT``, ``[V6]:PORT`` or a bare ``PORT`` on 127.0.0.1): prometheus_client's WSGI app
  served by a small wsgiref server in one daemon thread. A collector only reads ints and dict sizes; the GIL
  makes each read whole.
- ``textfile``: the exposition written to ``PATH.tmp`` beside it and renamed over ``PATH`` (mode 0644, so
  node_exporter's user reads it), every ``interval`` seconds from the daemon's own tick and once at stop.
  node_exporter's textfile collector reads only ``*.prom`` files, so the temporary name is never half-read.

Docs: docs/metrics.md.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, generate_latest, make_wsgi_app
from prometheus_client.registry import Collector

from .values import listen as parse_listen

__all__ = ["Exporter", "parse_listen", "write_textfile"]

log = logging.getLogger("portsentinel.metrics")

class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass  # one line per scrape on stderr would fill the journal


class _Server(WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _Server6(_Server):
    address_family = socket.AF_INET6


def write_textfile(path: str, registry: CollectorRegistry) -> None:
    """The exposition into ``path``, atomically: written whole to a temporary file beside it, then renamed."""
    data = generate_latest(registry)
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        os.fchmod(fd, 0o644)  # whatever the daemon's umask: node_exporter runs as another user
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    os.close(fd)
    os.replace(tmp, path)


class Exporter:
    """One daemon's metrics: a registry with its collectors, an optional HTTP endpoint and textfile."""

    def __init__(self, collectors: list[Collector], *, listen: str = "", textfile: str = "",
                 interval: float = 10.0) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        for c in collectors:
            self.registry.register(c)
        self.listen = listen
        self.textfile = textfile
        self.interval = interval
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._next_write = 0.0
        self.problem = ""  # the last textfile error, for a log line once per change

    @property
    def active(self) -> bool:
        return bool(self.listen or self.textfile)

    def start(self) -> None:
        """Bind the endpoint (raises OSError or ValueError naming the address)."""
        if not self.listen:
            return
        host, port = parse_listen(self.listen)
        cls = _Server6 if ":" in host else _Server
        try:
            self._server = make_server(host, port, make_wsgi_app(self.registry), server_class=cls,
                                       handler_class=_Quiet)
        except OSError as exc:
            raise OSError(exc.errno, f"metrics endpoint {self.listen}: {exc.strerror or exc}") from None
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.5},
                                        name="metrics-http", daemon=True)
        self._thread.start()
        log.info("metrics on http://%s/metrics", self.listen)

    @property
    def address(self) -> tuple[str, int] | None:
        """Where the endpoint listens (the port the kernel chose for port 0), or None."""
        if self._server is None:
            return None
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def tick(self, now: float) -> None:
        """Write the textfile when it is due (``now``: a monotonic time)."""
        if self.textfile and now >= self._next_write:
            self._next_write = now + self.interval
            self.write()

    def write(self) -> None:
        if not self.textfile:
            return
        try:
            write_textfile(self.textfile, self.registry)
        except OSError as exc:
            why = f"metrics textfile {self.textfile}: {exc.strerror or exc}"
            if why != self.problem:
                log.error("%s", why)
            self.problem = why
            return
        self.problem = ""

    def close(self) -> None:
        """Stop the endpoint; write the textfile one last time (the final counts)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None
        self.write()
