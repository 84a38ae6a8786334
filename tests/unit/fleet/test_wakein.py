"""portsentinel.fleet.wakein and the service's early publication: the decisions a wake-up datagram carries are
taken only from the responder's uid (the kernel's SCM_CREDENTIALS), published before the journal shows them, and
not published again when the journal does."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from pathlib import Path

from portsentinel import record as R
from portsentinel.common.wake import records_payload, send_wake
from portsentinel.fleet import service as S
from portsentinel.fleet.config import FleetConfig
from portsentinel.fleet.inputs import Decision
from portsentinel.fleet.wakein import DecisionWake


def _decision(src: str = "203.0.113.7", event: str = "ban", at: float | None = None) -> dict[str, str]:
    now = time.time() if at is None else at
    return {R.F_IDENT: R.RESPONDER_IDENTIFIER, R.F_EVENT: event, R.F_SHARE: "1", R.F_JAIL: "portsentinel",
            R.F_SRC: src, R.F_TIME: f"{now:.6f}", R.F_UNTIL: f"{now + 600:.3f}"}


def test_only_the_responders_uid_is_heard(tmp_path: Path) -> None:
    path = str(tmp_path / "wake")
    mine = DecisionWake(path, os.geteuid())
    try:
        payload = records_payload([_decision()])
        send_wake(path)  # an empty wake-up: no decisions
        send_wake(path, payload)
        assert mine.drain() == [payload] and mine.refused == 0
        assert mine.drain() == []
    finally:
        mine.close()
    other = DecisionWake(path, os.geteuid() + 4242)
    try:
        send_wake(path, payload)
        assert other.drain() == [] and other.refused == 1
    finally:
        other.close()


class JournalLater:
    """A decisions input that shows its records only once ``ready`` is set (journald, late)."""

    name = "late"

    def __init__(self) -> None:
        self.records: list[dict[str, str]] = []
        self.ready = False
        self.read_at = 0

    def fileno(self) -> int:
        return -1

    def close(self) -> None:
        pass

    def read(self, limit: int = 4096) -> list[Decision]:
        if not self.ready or self.read_at >= len(self.records):
            return []
        out = [(r, f"cursor-{i}") for i, r in enumerate(self.records) if i >= self.read_at]
        self.read_at = len(self.records)
        return out


def _config(tmp_path: Path, responder_uid: int) -> FleetConfig:
    """A host's fleet configuration with every file in ``tmp_path``, taking wake-ups from ``responder_uid``."""
    return FleetConfig(host="a", servers=("nats://192.0.2.1:4222",), decisions=str(tmp_path / "decisions.jsonl"),
                       state=str(tmp_path / "state.sqlite3"), output=str(tmp_path / "remote.jsonl"),
                       wake=str(tmp_path / "wake"), responder_wake="", status=str(tmp_path / "status.json"),
                       responder_uid=responder_uid)


def test_a_carried_decision_is_published_at_once_and_once(tmp_path: Path) -> None:
    cfg = _config(tmp_path, os.geteuid())
    svc = S.FleetService(cfg)
    late = JournalLater()
    svc.input = late
    first = _decision()
    late.records.append(first)

    async def run() -> None:
        send_wake(cfg.wake, records_payload([first]))
        svc._on_wake()
        assert [k for _, k, _ in svc.store.spooled(10)] == ["a.portsentinel.203-0-113-7"]  # before the journal
        svc.store.sent(svc.store.spooled(10))  # (published)
        late.ready = True
        await asyncio.sleep(0.05)  # the wake-up's reads after 1, 2, 4 ... ms find the journal's copy
        assert late.read_at == 1 and svc.store.spool_size() == 0 and svc.store.cursor() == "cursor-0"
        # a newer decision on the key that came only through the journal is published
        late.records.append(_decision(event="unban", at=float(first[R.F_TIME]) + 1))
        svc.read_decisions()
        assert [(k, v) for _, k, v in svc.store.spooled(10)] == [("a.portsentinel.203-0-113-7", None)]
        # a wake-up that says the same as the journal did, read after it: not again
        svc.store.sent(svc.store.spooled(10))
        send_wake(cfg.wake, records_payload(late.records[1:]))
        svc._on_wake()
        assert svc.store.spool_size() == 0

    asyncio.run(run())
    svc.close()


def test_a_wake_up_from_another_uid_publishes_nothing(tmp_path: Path) -> None:
    cfg = _config(tmp_path, os.geteuid() + 4242)
    svc = S.FleetService(cfg)
    svc.input = JournalLater()

    async def run() -> None:
        tx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        tx.sendto(records_payload([_decision()]), cfg.wake)
        tx.close()
        svc._on_wake()

    asyncio.run(run())
    assert svc.store.spool_size() == 0 and svc.wake.refused == 1
    svc.close()


def test_a_late_wake_up_does_not_bring_back_what_the_journal_already_undid(tmp_path: Path) -> None:
    """The journal's reader ran first and published a ban and its unban; the ban's wake-up, read after that, must
    not put the ban again."""
    cfg = _config(tmp_path, os.geteuid())
    svc = S.FleetService(cfg)
    journal = JournalLater()
    svc.input = journal
    ban = _decision()
    unban = _decision(event="unban", at=float(ban[R.F_TIME]) + 0.5)
    journal.records += [ban, unban]
    journal.ready = True

    async def run() -> None:
        svc.read_decisions()
        assert [(k, v) for _, k, v in svc.store.spooled(10)] == [("a.portsentinel.203-0-113-7", None)]
        svc.store.sent(svc.store.spooled(10))
        send_wake(cfg.wake, records_payload([ban]))
        svc._on_wake()
        assert svc.store.spool_size() == 0

    asyncio.run(run())
    svc.close()
