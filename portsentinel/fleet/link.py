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
- The watch is an ordered push consumer on ``$KV.<bucket>.>`` with an idle heartbeat, from a stream sequence
  (resume) or the last value per key (first start). nats-py resets an ordered consumer that misses heartbeats
  but gives up when recreating it fails; :meth:`Watch.healthy` lets the caller notice and restart it.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import api
from nats.js.client import JetStreamContext

from .config import FleetConfig
from .nats_errors import Denied, PermissionWatch, Rejected, Unreachable, guarded

log = logging.getLogger("portsentinel.fleet")

KV_OP = "KV-Operation"
JS_TIMEOUT = 3.0


class LinkDown(Exception):
    """The cluster did not acknowledge: keep the operation and try again later."""


class Refused(Exception):
    """The server's permissions refused the operation (it will never succeed)."""


@dataclass(frozen=True)
class Entry:
    """One message of the watch: key, operation (PUT, DEL, PURGE), value, stream sequence, pending, stored at."""

    key: str
    op: str
    value: bytes
    seq: int
    pending: int
    stamp: float


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
            self.nc = await nats.connect(
                servers=list(self.cfg.servers), name=f"portsentinel-fleet {self.cfg.host}",
                nkeys_seed=self.cfg.nkey_seed or None, tls=_tls(self.cfg), inbox_prefix=f"_INBOX_{self.cfg.host}",
                error_cb=self.perms.error_cb, disconnected_cb=self._disconnected, reconnected_cb=self._reconnected,
                allow_reconnect=True, max_reconnect_attempts=-1, reconnect_time_wait=1, connect_timeout=2,
                ping_interval=max(1, int(self.cfg.heartbeat)), max_outstanding_pings=2)
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
    async def watch(self, after_seq: int, on_entry: Callable[[Entry], Awaitable[None]]) -> Watch:
        """Every entry after stream sequence ``after_seq`` (0: the last value of every key, then live)."""
        if self.js is None or not self.connected:
            raise LinkDown("not connected")
        prefix = self.subject_prefix

        async def on_msg(msg: Msg) -> None:
            meta = msg.metadata
            op = (msg.headers or {}).get(KV_OP, "PUT")
            reason = (msg.headers or {}).get("Nats-Marker-Reason")
            if reason:  # 2.11+: server-placed markers (a key aged out, a purge)
                op = "PURGE" if reason in ("MaxAge", "Purge") else "DEL"
            await on_entry(Entry(msg.subject[len(prefix):], op, msg.data, int(meta.sequence.stream),
                                 int(meta.num_pending), meta.timestamp.timestamp()))

        config = api.ConsumerConfig()
        policy = api.DeliverPolicy.LAST_PER_SUBJECT
        if after_seq > 0:
            policy = api.DeliverPolicy.BY_START_SEQUENCE
            config.opt_start_seq = after_seq + 1
        try:
            sub = await self.js.subscribe(prefix + ">", stream=self.stream, cb=on_msg, ordered_consumer=True,
                                          idle_heartbeat=self.cfg.heartbeat, deliver_policy=policy, config=config,
                                          inactive_threshold=max(60.0, 10 * self.cfg.heartbeat))
        except Exception as exc:
            raise LinkDown(f"watch: {exc or type(exc).__name__}") from None
        return Watch(sub)


class Watch:
    def __init__(self, sub: Any) -> None:
        self.sub = sub
        self.pending = 0

    async def healthy(self, timeout: float) -> bool:
        """The consumer still exists on the server (its pending count kept for ``lag``)."""
        try:
            info = await asyncio.wait_for(self.sub.consumer_info(), timeout)
        except Exception:
            return False
        self.pending = int(info.num_pending or 0)
        return True

    async def stop(self) -> None:
        try:
            await asyncio.wait_for(self.sub.unsubscribe(), 2)
        except Exception:  # a dead connection: nothing to unsubscribe from
            pass
