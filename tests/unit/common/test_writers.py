"""portsentinel.common: the JSON-lines writer, journald detection and sd_notify, on real files and sockets."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest

from portsentinel import record as R
from portsentinel.common import sdnotify
from portsentinel.common.jsonlines import JsonLinesWriter
from portsentinel.common.systemd import journal_available


def _record(n: int) -> R.Record:
    return R.validate({R.F_MESSAGE: f"m{n}", "SYSLOG_IDENTIFIER": "portsentinel-detector", "PS_EVENT": "start"})


@pytest.mark.parametrize("sync", [True, False])
def test_jsonlines_mode_whole_lines_and_logrotate(tmp_path: Path, sync: bool) -> None:
    path = tmp_path / "log" / "alerts.jsonl"
    w = JsonLinesWriter(str(path), sync=sync)
    assert path.stat().st_mode & 0o777 == 0o640
    assert (tmp_path / "log").stat().st_mode & 0o777 == 0o750
    w.write(_record(1))
    w.flush()
    path.rename(tmp_path / "log" / "alerts.jsonl.1")  # logrotate moves it away
    w.write(_record(2))
    w.close()
    old = [json.loads(line)["MESSAGE"] for line in (tmp_path / "log" / "alerts.jsonl.1").read_text().splitlines()]
    new = [json.loads(line)["MESSAGE"] for line in path.read_text().splitlines()]
    assert (old, new) == (["m1"], ["m2"])


def test_journal_available_needs_a_listening_socket(tmp_path: Path) -> None:
    assert not journal_available(str(tmp_path / "missing"))
    (tmp_path / "file").write_text("")
    assert not journal_available(str(tmp_path / "file"))
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind(str(tmp_path / "sock"))
        assert journal_available(str(tmp_path / "sock"))
    assert not journal_available(str(tmp_path / "sock"))  # a stale socket file: nobody listens


def test_sd_notify_sends_states(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind(str(tmp_path / "notify"))
        monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
        monkeypatch.setenv("WATCHDOG_USEC", "4000000")
        n = sdnotify.Notifier()
        assert n.watchdog == 2.0
        n.ready("watching")
        assert s.recv(100) == b"READY=1\nSTATUS=watching"
        sdnotify.notify("WATCHDOG=1")
        assert s.recv(100) == b"WATCHDOG=1"
    monkeypatch.delenv("NOTIFY_SOCKET")
    sdnotify.notify("READY=1")  # no socket: silently nothing
    monkeypatch.setenv("WATCHDOG_USEC", "junk")
    assert sdnotify.watchdog_interval() == 0.0
    assert os.environ["WATCHDOG_USEC"] == "junk"
