"""The NATS side of the fleet daemon (nats-py, asyncio): connect, put and delete this host's keys, watch the
bucket from a stream sequence. The only module that imports ``nats``.

- Connection: the configured servers in order, the host's nkey seed, TLS verified against ``ca`` for ``tls://``
  servers, the host's own inbox prefix ``_INBOX_<host>`` (its permissions allow replies there only), reconnects
  for ever. A connection the server closed (an authorization error closes it for good in nats-py) is replaced
  by a new one: :meth:`Link.ensure`.
- A put or delete is a JetStream publish to ``$KV.<bucket>.<key>`` that waits for the stream's acknowledgement;
  whatever fails (no connection, no stream leader during an election, a timeout) raises :class:`LinkDown` and
  the caller keeps the operation spooled. A put the server's permissions refuse surfaces in nats-py only as a
  timeout plus an asynchronous error: :mod:`.nats_errors` tells it apart (:class:`Refused`, as is an error answer
  of JetStream, e.g. a refused rollup: retrying would not help).
- The watch is this host's own ordered push consumer (``ps_watch_<host>``, the only consumer its permissions
  allow) on ``$KV.<bucket>.>`` with flow control and an idle heartbeat, from a stream sequence (resume) or the last
  value per key (first start): :mod:`.pushwatch`. It recreates itself after a gap; :meth:`PushWatch.healthy` lets
  the caller notice a consumer the server dropped and start a new watch.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable

from nats.aio.client import Client
from nats.js.client import JetStreamContext

from .config import FleetConfig
from .consumer import ApiError, Entry, consumer_name
from .nats_errors import Denied, FleetNatsError, PermissionWatch, Rejected, Unreachable, guarded
from .natsclient import DirectClient
from .pushwatch import PushWatch

__all__ = ["Entry", "Link", "LinkDown", "PushWatch", "Refused"]

log = logging.getLogger("portsentinel.fleet")

KV_OP = "KV-Operation"
JS_TIMEOUT = 3.0


class LinkDown(Exception):
    """The cluster did not acknowledge: keep the operation and try again later."""


class Refused(Exception):
    """The server's permissions refused the operation (it will never succeed)."""


def _tls(cfg: FleetConfig) -> ssl.SSLContext | None:
    if not any(s.startswith("tls://") for s in cfg.servers):
        return None
    ctx = ssl.create_default_context(purpose=ssl.Purpose.SERVER_AUTH, cafile=cfg.ca or None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


class Link:
    def __init__(self, cfg: FleetConfig, on_event: Callable[[str, str], None]) -> None:
        self.cfg = cfg
        self.subject_prefix = f"$KV.{cfg.bucket}."
        self.stream = f"KV_{cfg.bucket}"
        self._on_event = on_event
        self.nc: Client | None = None
        self.js: JetStreamContext | None = None
        self.last_error = ""
        #: The connection's permission violations (nats-py reports a denied put only there; nats_errors).
        self.perms = PermissionWatch(chain=self._error)

    # ------------------------------------------------------------------ connection
    @property
    def connected(self) -> bool:
        return self.nc is not None and self.nc.is_connected

    @property
    def server(self) -> str:
        if self.nc is None or self.nc.connected_url is None:
            return ""
        url = self.nc.connected_url
        return f"{url.scheme}://{url.netloc}"

    async def _error(self, exc: Exception) -> None:
        """Errors other than permission violations (those go to :attr:`perms`)."""
        self.last_error = str(exc) or type(exc).__name__
        log.debug("nats: %s", self.last_error)

    async def _disconnected(self) -> None:
        self._on_event("disconnected", self.last_error)

    async def _reconnected(self) -> None:
        self._on_event("connected", self.server)

    async def ensure(self) -> bool:
        """Connected, or one attempt to connect made (False: not now). A closed connection is replaced."""
        if self.nc is not None and not self.nc.is_closed:
            return self.nc.is_connected
        try:
            nc = DirectClient()  # the watch's messages go straight to it (natsclient.py)
            await nc.connect(
                servers=list(self.cfg.servers), name=f"portsentinel-fleet {self.cfg.host}",
                nkeys_seed=self.cfg.nkey_seed or None, tls=_tls(self.cfg), inbox_prefix=f"_INBOX_{self.cfg.host}",
                error_cb=self.perms.error_cb, disconnected_cb=self._disconnected, reconnected_cb=self._reconnected,
                allow_reconnect=True, max_reconnect_attempts=-1, reconnect_time_wait=1, connect_timeout=2,
                ping_interval=max(1, int(self.cfg.heartbeat)), max_outstanding_pings=2)
            self.nc = nc
        except Exception as exc:  # nats-py raises many kinds (NoServersError, OSError, ssl errors, auth)
            self.nc = None
            self.last_error = str(exc) or type(exc).__name__
            return False
        self.js = self.nc.jetstream(timeout=JS_TIMEOUT)
        self._on_event("connected", self.server)
        return True

    async def close(self) -> None:
        if self.nc is not None and not self.nc.is_closed:
            try:
                await asyncio.wait_for(self.nc.drain(), 5)
            except Exception:  # closing anyway
                await self.nc.close()

    # ------------------------------------------------------------------ puts
    async def _publish(self, key: str, payload: bytes, headers: dict[str, str] | None) -> int:
        if self.js is None or not self.connected:
            raise LinkDown("not connected")
        subject = self.subject_prefix + key
        try:
            ack = await guarded(self.js.publish(subject, payload, timeout=JS_TIMEOUT, stream=self.stream,
                                                headers=headers), self.perms, subject)
        except (Denied, Rejected) as exc:
            raise Refused(str(exc)) from None
        except Unreachable as exc:
            raise LinkDown(str(exc)) from None
        return int(ack.seq)

    async def put(self, key: str, value: bytes) -> int:
        return await self._publish(key, value, None)

    async def delete(self, key: str) -> int:
        return await self._publish(key, b"", {KV_OP: "DEL"})

    async def last_seq(self) -> int:
        """The bucket stream's last sequence (LinkDown when it cannot be asked)."""
        if self.js is None or not self.connected:
            raise LinkDown("not connected")
        try:
            info = await self.js.stream_info(self.stream)
        except Exception as exc:
            raise LinkDown(str(exc) or type(exc).__name__) from None
        return int(info.state.last_seq)

    # ------------------------------------------------------------------ watch
    async def watch(self, after_seq: int, on_entries: Callable[[list[Entry]], None]) -> PushWatch:
        """Every entry after stream sequence ``after_seq`` (0: the last value of every key, then live), in lists,
        through this host's own consumer ``ps_watch_<host>`` (:mod:`.pushwatch`)."""
        if self.nc is None or not self.connected:
            raise LinkDown("not connected")
        watch = PushWatch(self.nc, self.perms, stream=self.stream, prefix=self.subject_prefix,
                          name=consumer_name(self.cfg.host), heartbeat=self.cfg.heartbeat, on_entries=on_entries)
        try:
            await watch.start(after_seq)
        except Denied as exc:
            self.last_error = f"watch: {exc}"
            log.error("fleet: the server refused this host's consumer %s: %s (the permissions of `portsentinel "
                      "fleet setup` allow only this name)", watch.name, exc)
            await watch.stop()
            raise LinkDown(self.last_error) from None
        except (FleetNatsError, ApiError) as exc:
            await watch.stop()
            raise LinkDown(f"watch: {exc}") from None
        return watch
