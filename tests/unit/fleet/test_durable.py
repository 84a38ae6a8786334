"""portsentinel.fleet.durable: a batch's lines are written and the responder woken before the fdatasync, which runs
in a worker thread; the watch position is committed only after it, batches flushed meanwhile are committed after
the next sync, and a failed sync keeps the position for the next attempt."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from pathlib import Path

import pytest

from portsentinel.fleet import codec as C
from portsentinel.fleet import durable as D
from portsentinel.fleet.output import WAKE_PAYLOAD, RemoteOutput
from portsentinel.fleet.store import Store


def _ban(addr: str) -> C.Ban:
    now = time.time()
    return C.Ban(addr, "portsentinel", now + 600, "syn", 0, 1, now)


def _line(addr: str) -> str:
    return f'{{"PS_SRC":"{addr}"}}\n'


def test_lines_and_wake_come_before_the_sync_and_the_position_after_it(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.bind(str(tmp_path / "wake"))
    rx.setblocking(False)
    out = RemoteOutput(str(tmp_path / "remote.jsonl"), 1 << 20, str(tmp_path / "wake"))
    store = Store(str(tmp_path / "state.sqlite3"), 100)
    commits = D.DurableCommits(out, store)
    release = threading.Event()
    synced: list[int] = []
    real = D._fdatasync

    def slow_sync(fd: int) -> None:
        release.wait(10)
        synced.append(fd)
        real(fd)

    monkeypatch.setattr(D, "_fdatasync", slow_sync)

    async def run() -> None:
        out.write_lines([_line("203.0.113.1")])
        commits.add(1, {("b", "portsentinel", "203.0.113.1"): _ban("203.0.113.1")})
        await asyncio.sleep(0.05)
        # written and woken, not durable yet: the position is not claimed
        assert (tmp_path / "remote.jsonl").read_text() == _line("203.0.113.1")
        assert rx.recv(16) == WAKE_PAYLOAD
        assert store.last_seq() == 0 and commits.pending
        # a second batch while the first sync runs: merged, committed after the next sync
        out.write_lines([_line("203.0.113.2")])
        commits.add(2, {("b", "portsentinel", "203.0.113.1"): None,
                        ("b", "portsentinel", "203.0.113.2"): _ban("203.0.113.2")})
        release.set()
        await commits.wait()

    asyncio.run(run())
    assert len(synced) == 2 and not commits.pending
    assert store.last_seq() == 2
    assert [(o, b.addr) for o, b in store.remote_bans()] == [("b", "203.0.113.2")]
    out.close()
    store.close()
    rx.close()


def test_a_failed_sync_keeps_the_position_for_the_next_attempt(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    out = RemoteOutput(str(tmp_path / "remote.jsonl"), 1 << 20, "")
    store = Store(str(tmp_path / "state.sqlite3"), 100)
    commits = D.DurableCommits(out, store)
    real = D._fdatasync
    calls: list[bool] = []

    def flaky(fd: int) -> None:
        calls.append(True)
        if len(calls) == 1:
            os.close(fd)
            raise OSError(5, "Input/output error")
        real(fd)

    monkeypatch.setattr(D, "_fdatasync", flaky)

    async def run() -> None:
        out.write_lines([_line("203.0.113.1")])
        commits.add(7, {("b", "portsentinel", "203.0.113.1"): _ban("203.0.113.1")})
        for _ in range(100):
            await asyncio.sleep(0.01)
            if calls:
                break
        await asyncio.sleep(0.01)
        assert store.last_seq() == 0 and commits.pending  # not durable: not claimed
        commits.add(8, {})  # the next batch (here: none) syncs those lines again and commits both
        await commits.wait()

    asyncio.run(run())
    assert len(calls) == 2 and store.last_seq() == 8
    assert [b.addr for _, b in store.remote_bans()] == ["203.0.113.1"]
    out.close()
    store.close()


def test_without_a_running_loop_the_sync_and_commit_are_inline(tmp_path: Path) -> None:
    out = RemoteOutput(str(tmp_path / "remote.jsonl"), 1 << 20, "")
    store = Store(str(tmp_path / "state.sqlite3"), 100)
    commits = D.DurableCommits(out, store)
    out.write_lines([_line("203.0.113.1")])
    commits.add(3, {("b", "portsentinel", "203.0.113.1"): _ban("203.0.113.1")})
    assert store.last_seq() == 3 and not commits.pending
    out.close()
    store.close()
