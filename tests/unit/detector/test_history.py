"""detector.adapters.history: PortSentry's history file, one line per scan record, on a file the test made."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import pytest

from portsentinel import record as R
from portsentinel.detector.adapters.history import HistoryFile, history_line


def scan(src: str = "198.51.100.7", port: str = "143", proto: str = "tcp", kind: str = "syn") -> R.Record:
    return R.Record({R.F_EVENT: "scan", R.F_SRC: src, R.F_PORT: port, R.F_PROTO: proto, R.F_SCAN: kind})


def test_the_line_keeps_portsentrys_shape() -> None:
    wall = 1_700_000_000.7
    stamp = time.strftime("%m/%d/%Y %H:%M:%S", time.localtime(wall))
    assert history_line(scan(), wall) == (f"1700000000 - {stamp} Host: 198.51.100.7/198.51.100.7 Port: 143 TCP "
                                          "Detected scan: syn\n")


def test_scan_records_are_appended_others_are_not(tmp_path: Path) -> None:
    path = tmp_path / "portsentry.history"
    history = HistoryFile(str(path))
    history.write(scan(), 1_700_000_000.0)
    history.write(R.Record({R.F_EVENT: "summary", R.F_SRC: "198.51.100.7"}), 1_700_000_001.0)
    history.write(scan("2001:db8::7", "69", "udp", "udp"), 1_700_000_002.0)
    lines = path.read_text().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("1700000000 - ") and lines[0].endswith("Port: 143 TCP Detected scan: syn")
    assert "Host: 2001:db8::7/2001:db8::7 Port: 69 UDP Detected scan: udp" in lines[1]
    assert path.stat().st_mode & 0o777 == 0o640 & ~_umask()
    path.unlink()  # rotated away: the next line starts a new file
    history.write(scan(), 1_700_000_003.0)
    assert len(path.read_text().splitlines()) == 1


def test_a_failure_is_logged_not_raised(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    history = HistoryFile(str(tmp_path / "missing-dir" / "portsentry.history"))
    with caplog.at_level(logging.ERROR, logger="portsentinel.detector"):
        history.write(scan(), 1_700_000_000.0)
    assert "history file" in caplog.text and "missing-dir" in caplog.text


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
