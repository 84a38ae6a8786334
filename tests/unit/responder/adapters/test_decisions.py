"""responder.adapters.decisions and the Reporter that feeds it: where decision records land (a JSON-lines file or
the private journald), when the file is synced (once per loop turn, not per decision), and a record that fails the
schema refused with its field named, nothing written."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from portsentinel import record as R
from portsentinel.responder.adapters.decisions import DecisionLog
from portsentinel.responder.adapters.rearm import RearmSender
from portsentinel.responder.metrics import ResponderMetrics
from portsentinel.responder.records import Reporter
from tests.journal import entries, new_tag

Make = Callable[[DecisionLog], Reporter]


@pytest.fixture
def synced(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    real: Callable[[int], None] = os.fdatasync

    def counting(fd: int) -> None:
        calls.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fdatasync", counting)
    return calls


@pytest.fixture
def reporter() -> Iterator[Callable[[DecisionLog], Reporter]]:
    """Reporters over a DecisionLog, with no detector to re-arm (an empty socket path)."""
    made: list[Reporter] = []

    def make(log: DecisionLog) -> Reporter:
        made.append(Reporter(log, RearmSender(""), ResponderMetrics()))
        return made[-1]

    yield make
    for rep in made:
        rep.rearm.close()
        rep.decisions.close()


def _lines(path: Path) -> list[R.Record]:
    return [R.from_json_line(line) for line in path.read_text().splitlines()]


def test_jsonl_file_made_at_the_first_decision_and_synced_once_per_turn(tmp_path: Path, synced: list[str],
                                                                        reporter: Make) -> None:
    path = tmp_path / "decisions.jsonl"
    log = DecisionLog(str(path), use_journal=False)
    assert log.name == f"jsonl {path}" and not path.exists()  # a responder that decides nothing makes no file
    rep = reporter(log)
    for n in range(3):
        rep.report(R.Event.BAN, f"jail scan: banned 192.0.2.{n}", PS_JAIL="scan", PS_SRC=f"192.0.2.{n}",
                   PS_BANTIME="60")
    assert synced == [] and len(_lines(path)) == 3
    rep.turn_done()
    assert synced == [str(path)]
    rep.turn_done()
    assert synced == [str(path)]  # nothing new, no sync
    got = _lines(path)
    assert [r.fields[R.F_SRC] for r in got] == ["192.0.2.0", "192.0.2.1", "192.0.2.2"]
    assert {r.fields[R.F_IDENT] for r in got} == {R.RESPONDER_IDENTIFIER}
    assert {r.fields[R.F_MSGID] for r in got} == {R.MESSAGE_IDS[R.Event.BAN]}


def test_a_network_ban_keeps_an_address_in_ps_src(tmp_path: Path, reporter: Make) -> None:
    path = tmp_path / "decisions.jsonl"
    log = DecisionLog(str(path), use_journal=False)
    reporter(log).report(R.Event.BAN, "jail scan: banned 2001:db8:1:2::/64", PS_JAIL="scan",
                          PS_SRC="2001:db8:1:2::/64")
    (rec,) = _lines(path)
    assert (rec.fields[R.F_SRC], rec.fields[R.F_SRC_NET]) == ("2001:db8:1:2::", "2001:db8:1:2::/64")


@pytest.mark.parametrize(("fields", "named"), [
    ({"PS_PORT": "70000"}, "PS_PORT: port out of range"),
    ({"PS_SRC": "192.0.2.300"}, "PS_SRC: not an IP address"),
    ({"PS_SCAN": "teleport"}, "PS_SCAN: unknown scan kind"),
    ({"PS_DETAIL": "x" * 5000}, "PS_DETAIL: value longer than 4096"),
    ({"ps_lower": "x"}, "ps_lower: not a valid journald field name"),
])
def test_a_record_that_fails_the_schema_is_refused_with_its_field_named(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, reporter: Make, fields: dict[str, str], named: str) -> None:
    path = tmp_path / "decisions.jsonl"
    log = DecisionLog(str(path), use_journal=False)
    with caplog.at_level(logging.ERROR, logger="portsentinel.responder"):
        reporter(log).report(R.Event.IGNORED, "jail scan: refused", PS_JAIL="scan", **fields)
    assert f"cannot write decision record: {named}" in caplog.text
    assert not path.exists()  # nothing written, not even a partial line


def test_journal_decisions_and_a_refused_one(journald: str, caplog: pytest.LogCaptureFixture, reporter: Make) -> None:
    tag = new_tag()
    log = DecisionLog("/nonexistent/decisions.jsonl", use_journal=True)
    assert log.name == "journal"
    rep = reporter(log)
    with caplog.at_level(logging.ERROR, logger="portsentinel.responder"):
        rep.report(R.Event.UNBAN, "jail scan: unbanned 192.0.2.9 (expired)", PS_JAIL="scan", PS_SRC="192.0.2.9",
                   PS_DETAIL="expired", PS_TEST=tag, PS_SEQ="1")
        rep.report(R.Event.UNBAN, "jail scan: unbanned ?", PS_JAIL="scan", PS_SRC="not-an-address", PS_TEST=tag,
                   PS_SEQ="2")
        rep.turn_done()
    assert "cannot write decision record: PS_SRC: not an IP address" in caplog.text
    assert len(entries(tag, 1)) == 1  # journald stores asynchronously: the good one first
    got = entries(tag, 2, timeout=1.0)  # then a while for a second entry that must never come
    assert [(e["PS_SEQ"], e["PS_SRC"], e["PS_EVENT"]) for e in got] == [("1", "192.0.2.9", "unban")]
    assert got[0]["SYSLOG_IDENTIFIER"] == R.RESPONDER_IDENTIFIER
