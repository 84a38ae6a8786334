"""The watch of the bucket: this host's own ordered push consumer on a plain subscription (docs/fleet.md,
"The watch"). The pure half (name, configuration, acknowledgement subjects) is :mod:`.consumer`.

nats-py's ordered consumer costs ~25 us a message before our code sees it (reply subject parsed into metadata
with datetime objects, a wrapper per message); a joining host receives 100,000. Here a message costs one append:
the client (:mod:`.natsclient`) hands each message of the subscription straight to a function that only appends
it to the current generation's buffer, and the first append schedules :meth:`PushWatch._drain`, which runs once
the client has handed over what it read: one tight loop splits each acknowledgement subject, checks the
consumer sequence, and passes the entries on in one list (``on_entries``, synchronous: the service batches).

Ordered-consumer semantics, done here: a gap in the consumer sequence (or a heartbeat naming a later one) means a
message was lost on the way: the consumer is recreated after the last stream sequence handed over. Flow-control
requests are answered once the data before them has been handed over; a heartbeat that says the consumer is
stalled is answered too. A consumer the server dropped is noticed by :meth:`PushWatch.healthy` (the service asks
when the watch has been quiet for twice the heartbeat) and the service starts a new watch.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from nats.aio.client import Client

from . import consumer as K
from .consumer import Entry
from .nats_errors import FleetNatsError, PermissionWatch, guarded
from .natsclient import subscribe_raw, unsubscribe_raw

#: A message as the subscription hands it over: subject, reply, data, headers (None when it has none).
Raw = tuple[str, str, bytes, "dict[str, str] | None"]

log = logging.getLogger("portsentinel.fleet")

API_TIMEOUT = 3.0


class PushWatch:
    def __init__(self, nc: Client, perms: PermissionWatch, *, stream: str, prefix: str, name: str,
                 heartbeat: float, on_entries: Callable[[list[Entry]], None]) -> None:
        self.nc = nc
        self.perms = perms
        self.stream = stream
        self.prefix = prefix  # "$KV.<bucket>."
        self.name = name
        self.heartbeat = heartbeat
        self.on_entries = on_entries
        #: The last stream sequence handed over (the watch resumes after it) and the server's pending count then.
        self.sseq = 0
        self.pending = 0
        #: Consumers recreated after a gap in the consumer sequence.
        self.resets = 0
        self.dead = False
        self._dseq = 0
        self._gen = 0
        self._sub: Any = None
        self._restart: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ the consumer
    async def _api(self, subject: str, payload: bytes) -> dict[str, object]:
        msg = await guarded(self.nc.request(subject, payload, timeout=API_TIMEOUT), self.perms, subject)
        return K.api_answer(msg.data)

    async def _delete(self) -> None:
        try:
            await self._api(K.delete_subject(self.stream, self.name), b"")
        except K.ApiError as exc:
            if exc.code != 10014:  # consumer not found: nothing to delete
                raise

    async def start(self, after_seq: int) -> None:
        """A consumer of every entry after stream sequence ``after_seq`` (0: the last entry of every key); an
        older consumer of this name (a previous run, a previous generation) is deleted first. Raises
        :class:`.nats_errors.FleetNatsError` or :class:`.consumer.ApiError`."""
        await self._unsubscribe()
        self._gen += 1
        gen: int = self._gen
        buf: list[Raw] = []
        loop = asyncio.get_running_loop()
        drain = self._drain
        append = buf.append

        def on_msg(subject: str, reply: str, data: bytes, headers: dict[str, str] | None) -> None:
            append((subject, reply, data, headers))
            if len(buf) == 1:
                loop.call_soon(drain, gen, buf)

        await self._delete()
        self.sseq, self._dseq, self.dead = after_seq, 0, False
        inbox = self.nc.new_inbox()
        self._sub = await subscribe_raw(self.nc, inbox, on_msg)
        body = K.create_request(self.stream, self.name, deliver=inbox, filter_subject=self.prefix + ">",
                                after_seq=after_seq, heartbeat=self.heartbeat,
                                inactive=max(60.0, 10 * self.heartbeat))
        answer = await self._api(K.create_subject(self.stream, self.name), body)
        pending = answer.get("num_pending")
        if self.sseq == after_seq and isinstance(pending, int):  # (nothing handed over yet)
            self.pending = pending

    async def _unsubscribe(self) -> None:
        sub, self._sub = self._sub, None
        self._gen += 1  # whatever the old subscription still delivers is dropped
        if sub is not None:
            try:
                await asyncio.wait_for(unsubscribe_raw(self.nc, sub), 2)
            except Exception:  # a dead connection: nothing to unsubscribe from
                pass

    async def stop(self) -> None:
        """Unsubscribe and delete the consumer (best effort: the server drops it after its inactive threshold)."""
        if self._restart is not None:
            self._restart.cancel()
        await self._unsubscribe()
        try:
            await asyncio.wait_for(self._delete(), API_TIMEOUT + 1)
        except Exception:  # the cluster unreachable or the consumer gone already
            pass

    async def healthy(self, timeout: float) -> bool:
        """The consumer still exists on the server (its pending count kept for ``lag``)."""
        if self.dead:
            return False
        if self._restart is not None:
            return True
        try:
            info = await asyncio.wait_for(self._api(K.info_subject(self.stream, self.name), b""), timeout)
        except (TimeoutError, FleetNatsError, K.ApiError):
            return False
        pending = info.get("num_pending")
        self.pending = pending if isinstance(pending, int) else 0
        return True

    # ------------------------------------------------------------------ messages
    def take(self, msgs: list[Raw]) -> None:
        """Messages of the current consumer, as its subscription delivered them, in order (what the drain does with
        a subscription's buffer; benchmarks and tests hand messages over here)."""
        self._drain(self._gen, msgs)

    def _drain(self, gen: int, buf: list[Raw]) -> None:
        msgs = buf[:]
        buf.clear()
        if gen != self._gen:
            return
        plen = len(self.prefix)
        dseq = self._dseq
        entries: list[Entry] = []
        add = entries.append
        new = tuple.__new__  # Entry(...) without its Python-level __new__ (a catch-up makes 100,000)
        for subject, reply, data, hdr in msgs:
            if reply[:8] == "$JS.ACK.":
                t = reply.split(".")
                if len(t) == 9:
                    sseq, d, nanos, pending = t[5], t[6], t[7], t[8]
                elif len(t) >= 11:
                    sseq, d, nanos, pending = t[7], t[8], t[9], t[10]
                else:
                    log.warning("fleet: watch: message with an unknown acknowledgement subject %.120r", reply)
                    continue
                if int(d) != dseq + 1:
                    self._hand_over(entries, dseq)
                    self._reset(f"consumer sequence {d} after {dseq}")
                    return
                dseq += 1
                add(new(Entry, (subject[plen:], "PUT" if not hdr else K.operation(hdr), data, int(sseq),
                                int(pending), int(nanos) / 1e9)))
                continue
            self._hand_over(entries, dseq)
            entries = []
            add = entries.append
            if not self._control(reply, hdr or {}):
                return
        self._hand_over(entries, dseq)

    def _hand_over(self, entries: list[Entry], dseq: int) -> None:
        self._dseq = dseq
        if entries:
            last = entries[-1]
            self.sseq, self.pending = last.seq, last.pending
            self.on_entries(entries)

    def _control(self, reply: str, hdr: dict[str, str]) -> bool:
        """A message without an acknowledgement subject: flow control, heartbeat, or a status. False: the
        consumer is being recreated (stop reading this generation)."""
        if reply.startswith(K.FC_PREFIX):
            self._answer(reply)  # the data before it has been handed over
            return True
        status = hdr.get(K.STATUS, "")
        if status == "100":  # idle heartbeat
            last = K.last_consumer_seq(hdr)
            if last is not None and last > self._dseq:
                self._reset(f"heartbeat names consumer sequence {last}, last received {self._dseq}")
                return False
            stalled = hdr.get(K.STALLED)
            if stalled:
                self._answer(stalled)
            return True
        if status:
            log.warning("fleet: watch: status %s %s from the server", status, hdr.get(K.DESCRIPTION, ""))
            if status == "409":  # e.g. "Consumer Deleted": the service's health check starts a new watch
                self.dead = True
                return False
        return True

    def _answer(self, subject: str) -> None:
        asyncio.ensure_future(self._publish(subject))

    async def _publish(self, subject: str) -> None:
        try:
            await self.nc.publish(subject, b"")
        except Exception as exc:  # the connection is going: the heartbeat check notices
            log.debug("fleet: watch: flow-control reply: %s", exc)

    def _reset(self, why: str) -> None:
        if self._restart is not None:
            return
        self.resets += 1
        log.info("fleet: watch: %s; consumer recreated after stream sequence %d", why, self.sseq)
        self._restart = asyncio.ensure_future(self._recreate())

    async def _recreate(self) -> None:
        try:
            await self.start(self.sseq)
        except Exception as exc:  # the service's health check starts a new watch
            log.warning("fleet: watch: cannot recreate the consumer: %s", exc)
            self.dead = True
        finally:
            self._restart = None
