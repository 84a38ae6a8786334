"""detector.adapters.sinks: the output option picks the transport; JSON lines are synced per record (one alert
matters), the journal gets one entry per record."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from portsentinel import record as R
from portsentinel.detector.adapters.sinks import open_sink
from tests.journal import entries, new_tag


def _scan(tag: str, n: int) -> R.Record:
    return R.validate({R.F_MESSAGE: f"attackalert {n}", R.F_IDENT: R.DETECTOR_IDENTIFIER, R.F_EVENT: "scan",
                       R.F_SRC: f"198.51.100.{n}", "PS_TEST": tag})


def test_jsonl_output_syncs_each_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[str] = []
    real: Callable[[int], None] = os.fdatasync

    def counting(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fdatasync", counting)
    path = tmp_path / "log" / "alerts.jsonl"
    sink = open_sink("jsonl", str(path))
    assert sink.name == "jsonl" and path.exists()  # made at start: the admin sees where alerts will go
    for n in (1, 2):
        sink.write(_scan("t", n))
        assert synced == [str(path)] * n  # durable before write() returns, no flush needed
    sink.close()
    assert [R.from_json_line(line) for line in path.read_text().splitlines()] == [_scan("t", 1), _scan("t", 2)]


@pytest.mark.parametrize("output", ["journal", "auto"])
def test_journal_and_auto_output_write_to_journald(journald: str, tmp_path: Path, output: str) -> None:
    tag = new_tag()
    sink = open_sink(output, str(tmp_path / "alerts.jsonl"))
    sink.write(_scan(tag, 7))
    sink.close()
    assert sink.name == "journal" and not (tmp_path / "alerts.jsonl").exists()
    (entry,) = entries(tag, 1)
    assert (entry["PS_SRC"], entry["MESSAGE"], entry["SYSLOG_IDENTIFIER"]) == ("198.51.100.7", "attackalert 7",
                                                                               R.DETECTOR_IDENTIFIER)
