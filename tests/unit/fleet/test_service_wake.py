"""portsentinel.fleet.service: a wake-up that finds the responder's decision not yet readable looks again soon
(journald makes a record readable a little after the responder wrote it and woke us; its own notification can
come ~250 ms later), and stops looking once something was read or the last delay passed."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from portsentinel.fleet import service as S
from portsentinel.fleet.config import FleetConfig
from portsentinel.fleet.inputs import Decision


class LateInput:
    """A decisions input whose one record becomes readable only at its ``ready`` read."""

    name = "late"

    def __init__(self, ready: int) -> None:
        self.ready = ready
        self.reads: list[float] = []

    def fileno(self) -> int:
        return -1

    def close(self) -> None:
        pass

    def read(self, limit: int = 4096) -> list[Decision]:
        self.reads.append(time.monotonic())
        if len(self.reads) != self.ready:
            return []
        fields = {"SYSLOG_IDENTIFIER": "portsentinel-responder", "PS_EVENT": "ban", "PS_SHARE": "1",
                  "PS_JAIL": "portsentinel", "PS_SRC": "203.0.113.7", "PS_TIME": f"{time.time():.6f}",
                  "PS_UNTIL": f"{time.time() + 600:.3f}"}
        return [(fields, "cursor-1")]


def _service(tmp_path: Path) -> S.FleetService:
    cfg = FleetConfig(host="a", servers=("nats://192.0.2.1:4222",), decisions=str(tmp_path / "decisions.jsonl"),
                      state=str(tmp_path / "state.sqlite3"), output=str(tmp_path / "remote.jsonl"),
                      wake=str(tmp_path / "wake"), responder_wake="", status=str(tmp_path / "status.json"))
    return S.FleetService(cfg)


def test_a_wake_before_the_record_is_readable_reads_again_until_it_is(tmp_path: Path) -> None:
    svc = _service(tmp_path)
    late = LateInput(ready=4)  # readable at the 4th look: after the 1, 2 and 4 ms delays
    svc.input = late

    async def run() -> None:
        svc._on_wake()
        await asyncio.sleep(sum(S.SETTLE) + 0.2)

    asyncio.run(run())
    assert len(late.reads) == 5  # 4 until it came, then the batch loop's empty read; no more after that
    assert svc.store.spool_size() == 1 and svc.store.cursor() == "cursor-1"
    svc.close()


def test_a_wake_with_nothing_to_read_gives_up_after_the_last_delay(tmp_path: Path) -> None:
    svc = _service(tmp_path)
    never = LateInput(ready=0)
    svc.input = never

    async def run() -> None:
        svc._on_wake()
        await asyncio.sleep(sum(S.SETTLE) + 0.3)

    asyncio.run(run())
    assert len(never.reads) == len(S.SETTLE) + 1  # bounded: one read now, one after each delay
    assert never.reads[-1] - never.reads[0] >= sum(S.SETTLE) * 0.9
    svc.close()


def test_a_burst_of_live_entries_is_one_write_of_lines_for_the_responder(tmp_path: Path) -> None:
    """Live bans arriving together (each with nothing pending after it) are flushed once, when the burst is over:
    one write, one wake of the responder, one fdatasync, one commit."""
    from portsentinel.fleet import codec as C
    from portsentinel.fleet.keys import make_key
    from portsentinel.fleet.link import Entry

    svc = _service(tmp_path)
    writes: list[int] = []
    real = svc.output.write_lines

    def counted(lines: list[str]) -> int:
        writes.append(len(lines))
        return real(lines)

    svc.output.write_lines = counted  # type: ignore[method-assign]

    async def burst() -> None:
        now = time.time()
        for i in range(1, 51):
            addr = f"203.0.113.{i}"
            value = C.encode_ban(C.Ban(addr, "portsentinel", now + 600, "syn", 0, 1, now))
            svc.on_entries([Entry(make_key("b", "portsentinel", addr), "PUT", value, i, 0, now)])
        assert writes == []  # nothing yet: the burst is still being handed over
        await asyncio.sleep(0)
        assert writes == [50]
        await svc.durable.wait()  # the position is committed once the lines are durable
        assert svc.store.last_seq() == 50
        assert len((tmp_path / "remote.jsonl").read_text().splitlines()) == 50

    asyncio.run(burst())
    svc.close()


@pytest.mark.parametrize("path", ["general", "fast"])
def test_an_entry_that_breaks_the_applier_is_skipped_not_a_stopped_watch(tmp_path: Path, path: str) -> None:
    """Whatever a remote entry makes the applier raise, the watch goes on: the entry is counted as refused for its
    origin, the entries after it are applied, and the sequence moves past it (no replay at the next start). Both
    ways through the applier: the general one (Applier.entry: a value with blanks) and apply_many's own loop."""
    import json

    from portsentinel.fleet import codec as C
    from portsentinel.fleet.keys import make_key
    from portsentinel.fleet.link import Entry

    svc = _service(tmp_path)
    if path == "general":
        real = svc.applier.entry

        def breaks_on_one(key: str, *args: object, **kw: object) -> object:
            if key.endswith("203-0-113-2"):
                raise OverflowError("int too large to convert to float")
            return real(key, *args, **kw)  # type: ignore[arg-type]

        svc.applier.entry = breaks_on_one  # type: ignore[assignment, method-assign]
    else:
        real_rate = svc.applier._rate_ok
        calls = iter(range(10))

        def breaks_once(origin: str, now: float) -> bool:
            if next(calls) == 1:
                raise OverflowError("int too large to convert to float")
            return real_rate(origin, now)

        svc.applier._rate_ok = breaks_once  # type: ignore[method-assign]

    async def three() -> None:
        now = time.time()
        for i in range(1, 4):
            addr = f"203.0.113.{i}"
            value = C.encode_ban(C.Ban(addr, "portsentinel", now + 600, "syn", 0, 1, now))
            if path == "general" and i == 2:
                value = json.dumps(json.loads(value)).encode()  # blanks: not the compact shape
            svc.on_entries([Entry(make_key("b", "portsentinel", addr), "PUT", value, i, 0, now)])
        await asyncio.sleep(0)
        await svc.durable.wait()

    asyncio.run(three())
    lines = (tmp_path / "remote.jsonl").read_text().splitlines()
    assert len(lines) == 2 and "203.0.113.3" in lines[1] and svc.store.last_seq() == 3
    assert svc.audit.totals["refused"] == 1
    svc.close()


def test_lines_the_output_cannot_take_are_held_and_the_position_waits_for_them(tmp_path: Path) -> None:
    """A full disk: the remote bans' lines stay held and the watch position is not committed past them (a restart
    would replay them); once the file takes writes again the held lines go first, then the position moves."""
    import errno

    from portsentinel.fleet import codec as C
    from portsentinel.fleet.keys import make_key
    from portsentinel.fleet.link import Entry

    svc = _service(tmp_path)
    real = svc.output.write_lines
    full = True

    def maybe_full(lines: list[str]) -> int:
        if full:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(lines)

    svc.output.write_lines = maybe_full  # type: ignore[method-assign]

    def entry(i: int) -> Entry:
        now = time.time()
        addr = f"203.0.113.{i}"
        return Entry(make_key("b", "portsentinel", addr), "PUT",
                     C.encode_ban(C.Ban(addr, "portsentinel", now + 600, "syn", 0, 1, now)), i, 0, now)

    async def run() -> None:
        nonlocal full
        svc.on_entries([entry(1), entry(2)])
        await asyncio.sleep(0)
        await svc.durable.wait()
        assert svc.store.last_seq() == 0 and svc.status()["output_held"] == 2
        assert svc.status()["output_error"]
        svc.on_entries([entry(3)])
        await asyncio.sleep(0)
        await svc.durable.wait()
        assert svc.store.last_seq() == 0 and svc.status()["output_held"] == 3
        full = False
        svc.flush_applied()
        await svc.durable.wait()
        assert svc.store.last_seq() == 3
        assert svc.status()["output_held"] == 0 and svc.status()["output_error"] is None

    asyncio.run(run())
    srcs = [json.loads(line)["PS_SRC"] for line in (tmp_path / "remote.jsonl").read_text().splitlines()]
    assert srcs == ["203.0.113.1", "203.0.113.2", "203.0.113.3"]
    svc.close()
