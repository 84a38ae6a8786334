"""portsentinel.fleet.output: lines appended whole, mode 0640, one wake-up per batch, renamed to .1 past its size."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

from portsentinel import record as R
from portsentinel.fleet.applier import Line
from portsentinel.fleet.lines import to_record
from portsentinel.fleet.output import WAKE_PAYLOAD, RemoteOutput


def test_batches_wake_and_rotation(tmp_path: Path) -> None:
    wake = tmp_path / "wake.sock"
    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.bind(str(wake))
    rx.setblocking(False)
    path = tmp_path / "remote.jsonl"
    out = RemoteOutput(str(path), 8000, str(wake))  # ~4,700 bytes a batch
    recs = [to_record(Line("ban", f"198.51.100.{i}", "a", "portsentinel", 2e9, 1), 1e9) for i in range(10)]
    assert out.write(recs) == 10 and out.write([]) == 0
    assert rx.recv(16) == WAKE_PAYLOAD and os.stat(path).st_mode & 0o777 == 0o640
    lines = path.read_text().splitlines()
    assert [R.from_json_line(x).src for x in lines] == [f"198.51.100.{i}" for i in range(10)]
    assert all(json.loads(x)["SYSLOG_IDENTIFIER"] == "portsentinel-fleet" for x in lines)
    out.write(recs)  # past 8,000 bytes: renamed, a new file opened for the next batch
    assert (tmp_path / "remote.jsonl.1").exists() and path.read_text() == ""
    out.write(recs[:1])
    assert len(path.read_text().splitlines()) == 1
    out.close()
    rx.close()
