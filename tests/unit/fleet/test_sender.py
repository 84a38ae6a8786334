"""portsentinel.fleet.sender: a spooled operation is put at once, while earlier puts wait for their
acknowledgement; rows leave the spool only once acknowledged (or refused for good); a failed put stays spooled and
is sent again after a pause; what is in flight at a stop stays spooled."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from portsentinel.fleet import sender as SD
from portsentinel.fleet.audit import Audit
from portsentinel.fleet.link import LinkDown, Refused
from portsentinel.fleet.store import Store


class SlowLink:
    """A link whose puts complete when the test says: ``answer(key, result)`` (None: acknowledged)."""

    connected = True

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None]] = []
        self._waiting: dict[str, asyncio.Future[None]] = {}

    async def _op(self, key: str, value: bytes | None) -> int:
        self.sent.append((key, value))
        fut = asyncio.get_running_loop().create_future()
        self._waiting[key] = fut
        await fut
        return 1

    async def put(self, key: str, value: bytes) -> int:
        return await self._op(key, value)

    async def delete(self, key: str) -> int:
        return await self._op(key, None)

    def answer(self, key: str, exc: Exception | None = None) -> None:
        fut = self._waiting.pop(key)
        if exc is None:
            fut.set_result(None)
        else:
            fut.set_exception(exc)


def _sender(tmp_path: Path) -> tuple[SD.Sender, SlowLink, Store, Audit]:
    link, store, audit = SlowLink(), Store(str(tmp_path / "state.sqlite3"), 100), Audit()
    return SD.Sender(link, store, audit), link, store, audit  # type: ignore[arg-type]


async def _turns(n: int = 3) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


def test_a_new_operation_is_not_held_up_by_the_puts_in_flight(tmp_path: Path) -> None:
    sender, link, store, _ = _sender(tmp_path)

    async def run() -> None:
        store.spool([("a.j.1-1-1-1", b"v1")])
        assert sender.send_spooled() == 1
        await _turns()
        store.spool([("a.j.2-2-2-2", b"v2"), ("a.j.3-3-3-3", None)])
        assert sender.send_spooled() == 2  # the first is still waiting for its acknowledgement
        assert sender.send_spooled() == 0  # nothing is sent twice
        await _turns()
        assert link.sent == [("a.j.1-1-1-1", b"v1"), ("a.j.2-2-2-2", b"v2"), ("a.j.3-3-3-3", None)]
        link.answer("a.j.2-2-2-2")
        await _turns()
        assert [k for _, k, _ in store.spooled(10)] == ["a.j.1-1-1-1", "a.j.3-3-3-3"]  # acknowledged: gone
        link.answer("a.j.1-1-1-1")
        link.answer("a.j.3-3-3-3")
        await _turns()
        assert store.spool_size() == 0 and sender.published == 3
        assert store.own_keys("2-2-2-2") == ["a.j.2-2-2-2"] and store.own_keys("3-3-3-3") == []

    asyncio.run(run())
    store.close()


def test_a_failed_put_stays_spooled_and_is_sent_again_after_the_pause(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setattr(SD, "BACKOFF", 0.05)
    sender, link, store, audit = _sender(tmp_path)

    async def run() -> None:
        stop = asyncio.Event()
        task = asyncio.get_running_loop().create_task(sender.run(stop))
        store.spool([("a.j.1-1-1-1", b"v1"), ("a.j.2-2-2-2", b"v2")])
        sender.kick()
        await _turns(5)
        link.answer("a.j.1-1-1-1", LinkDown("no stream leader"))
        link.answer("a.j.2-2-2-2", Refused("permissions violation"))
        await _turns(5)
        assert [k for _, k, _ in store.spooled(10)] == ["a.j.1-1-1-1"]  # the refused one is dropped, for good
        assert sender.spooled_offline >= 1 and sender.send_spooled() == 0  # paused
        started = time.monotonic()
        while len(link.sent) < 3 and time.monotonic() - started < 2:
            await asyncio.sleep(0.01)
        assert link.sent[-1] == ("a.j.1-1-1-1", b"v1") and time.monotonic() - started >= 0.03
        link.answer("a.j.1-1-1-1")
        await _turns(5)
        assert store.spool_size() == 0
        stop.set()
        await task
        sender.send_spooled()  # drained: the outage's decisions announced once
        assert sender.spooled_offline == 0

    asyncio.run(run())
    records = audit.due(time.time(), force=True)
    messages = [str(r.get("MESSAGE")) for r in records]
    assert any("refused a.j.2-2-2-2" in m for m in messages) and any("spool drained:" in m for m in messages)
    store.close()


def test_what_is_in_flight_at_a_stop_stays_spooled(tmp_path: Path) -> None:
    sender, link, store, _ = _sender(tmp_path)

    async def run() -> None:
        store.spool([("a.j.1-1-1-1", b"v1"), ("a.j.2-2-2-2", b"v2")])
        sender.send_spooled()
        await _turns()
        link.answer("a.j.1-1-1-1")
        await sender.stop()

    asyncio.run(run())
    assert [k for _, k, _ in store.spooled(10)] == ["a.j.2-2-2-2"]
    store.close()
