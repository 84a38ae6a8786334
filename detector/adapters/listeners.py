"""Bound listeners for the classic tcp and udp sentries.

One dual-stack socket per port (IPv4 arrives v4-mapped), falling back to IPv4 only where IPv6 is off. A
port another program already holds is reported and skipped. TCP connections are accepted (the handshake
proves the source), optionally sent the banner, and closed at once; UDP datagrams are read and dropped.
"""

from __future__ import annotations

import errno
import logging
import socket
from dataclasses import dataclass

log = logging.getLogger("portsentinel.detector")


@dataclass
class Listener:
    sock: socket.socket
    proto: str  # "tcp" or "udp"
    port: int

    def fileno(self) -> int:
        return self.sock.fileno()


def _bind(proto: str, port: int) -> socket.socket:
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    try:
        sock = socket.socket(socket.AF_INET6, kind)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        addr: tuple[str, int] = ("::", port)
    except OSError:
        sock = socket.socket(socket.AF_INET, kind)
        addr = ("0.0.0.0", port)
    try:
        if proto == "tcp":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        if proto == "tcp":
            sock.listen(64)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def open_listeners(proto: str, ports: list[int]) -> tuple[list[Listener], list[tuple[int, str]]]:
    """Bind every port; returns the listeners and the (port, reason) pairs that were skipped."""
    out: list[Listener] = []
    skipped: list[tuple[int, str]] = []
    for port in ports:
        try:
            out.append(Listener(_bind(proto, port), proto, port))
        except OSError as exc:
            reason = "in use by another program" if exc.errno == errno.EADDRINUSE else (exc.strerror or str(exc))
            skipped.append((port, reason))
    return out, skipped


def accept_one(lst: Listener, banner: bytes) -> tuple[str, str] | None:
    """Accept one TCP connection (or read one datagram): returns (source, local address) or None."""
    try:
        if lst.proto == "tcp":
            conn, peer = lst.sock.accept()
            try:
                local = conn.getsockname()[0]
                if banner:
                    conn.setblocking(False)
                    try:
                        conn.send(banner)
                    except OSError:
                        pass
            finally:
                conn.close()
        else:
            _, peer = lst.sock.recvfrom(2048)
            local = lst.sock.getsockname()[0]
    except (BlockingIOError, InterruptedError):
        return None
    except OSError as exc:
        log.debug("listener %s/%d: %s", lst.proto, lst.port, exc)
        return None
    # The kernel names a link-local IPv6 peer with its zone (fe80::1%eth0); the address alone is the source.
    return str(peer[0]).split("%", 1)[0], str(local).split("%", 1)[0]


def close_all(listeners: list[Listener]) -> None:
    for lst in listeners:
        lst.sock.close()
