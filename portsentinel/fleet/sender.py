"""The spool drained into the bucket with puts kept in flight (docs/fleet.md, "The spool").

A spooled operation is sent as soon as it is spooled, without waiting for the acknowledgements of the puts already
in flight (at most :data:`WINDOW` at once): a decision made while others are on their way is not held up by their
round trip (several ms to the stream leader and its replicas, tens under load). Rows leave the spool only when the
cluster acknowledged them (or refused them for good: a ``failed`` record), a batch of acknowledgements at a time.
A put that fails (no connection, no stream leader during an election, a timeout) stays spooled: sending stops for
:data:`BACKOFF` seconds, then everything spooled and not in flight is sent again, in spool order.

Operations on one key go out in the order they were spooled, on one connection, so the stream keeps their order; a
newer operation replaces a waiting one in the spool, so a failed older one is not sent again after it.
"""

from __future__ import annotations

import asyncio
import time

from portsentinel import record as R

from .audit import Audit
from .link import Link, LinkDown, Refused
from .store import SpoolRow, Store

#: Puts in flight at once (distinct keys: the spool holds one operation per key).
WINDOW = 64
#: After a failed put: seconds before sending again (an election, an outage).
BACKOFF = 0.5


class Sender:
    def __init__(self, link: Link, store: Store, audit: Audit) -> None:
        self.link = link
        self.store = store
        self.audit = audit
        self.published = 0
        #: Operations spooled while the cluster was unreachable, announced once the spool is drained.
        self.spooled_offline = 0
        self._inflight: dict[int, asyncio.Task[None]] = {}
        self._acked: list[SpoolRow] = []
        self._quiet_until = 0.0
        self._kick = asyncio.Event()

    def kick(self) -> None:
        """Something was spooled, or the connection changed: send what can be sent."""
        self._kick.set()

    def send_spooled(self) -> int:
        """Start a put for each spooled operation not in flight (up to :data:`WINDOW` in flight); how many."""
        room = WINDOW - len(self._inflight)
        if room <= 0 or not self.link.connected or time.monotonic() < self._quiet_until:
            return 0
        rows = [r for r in self.store.spooled(room + len(self._inflight)) if r[0] not in self._inflight][:room]
        for row in rows:
            self._inflight[row[0]] = asyncio.get_running_loop().create_task(self._send(row))
        if not rows and not self._inflight and self.spooled_offline and not self.store.spool_size():
            self.audit.event(R.Event.SUMMARY, f"fleet: spool drained: {self.spooled_offline} decision(s) made while "
                             "the cluster was unreachable are published", time.time(),
                             PS_DETAIL=f"spooled={self.spooled_offline}")
            self.spooled_offline = 0
        return len(rows)

    async def _send(self, row: SpoolRow) -> None:
        _, key, value = row
        done = False
        try:
            await (self.link.put(key, value) if value is not None else self.link.delete(key))
            self.published += 1
            self.audit.count("published", 1)
            done = True
        except Refused as exc:
            self.audit.event(R.Event.FAILED, f"fleet: the cluster refused {key}: {exc}", time.time(),
                             PS_DETAIL="refused")
            done = True
        except Exception as exc:  # LinkDown, or anything nats-py raised: kept, sent again after a pause
            if isinstance(exc, LinkDown) and not self.spooled_offline:
                self.spooled_offline = self.store.spool_size()
            self._quiet_until = time.monotonic() + BACKOFF
        finally:
            if done:  # out of the spool with the others acknowledged meanwhile; in flight until then
                if not self._acked:
                    asyncio.get_running_loop().call_soon(self._commit_acked)
                self._acked.append(row)
            else:
                self._inflight.pop(row[0], None)
            self._kick.set()

    def _commit_acked(self) -> None:
        rows, self._acked = self._acked, []
        if rows:
            self.store.sent(rows)
        for row in rows:
            self._inflight.pop(row[0], None)

    async def run(self, stop: asyncio.Event) -> None:
        """Send whenever kicked (and once a second), pausing after a failure; until ``stop``."""
        while not stop.is_set():
            try:
                await asyncio.wait_for(self._kick.wait(), 1.0)
            except TimeoutError:
                pass
            self._kick.clear()
            pause = self._quiet_until - time.monotonic()
            if pause > 0:
                try:
                    await asyncio.wait_for(stop.wait(), pause)
                except TimeoutError:
                    pass
            self.send_spooled()

    async def stop(self) -> None:
        """Wait briefly for the puts in flight (what is not acknowledged stays spooled), commit what was."""
        tasks = list(self._inflight.values())
        if tasks:
            await asyncio.wait(tasks, timeout=2.0)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._commit_acked()
