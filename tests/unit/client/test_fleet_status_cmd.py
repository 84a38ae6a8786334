"""`portsentinel fleet status`: the daemon's status file, as text or JSON; a clear error without one."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from portsentinel.client.cli import main
from portsentinel.fleet import status as S


def test_fleet_status(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "status.json"
    assert main(["fleet", "status", "--status-file", str(path)]) == 3
    assert "is portsentinel-fleet running?" in capsys.readouterr().err
    data = {"time": time.time(), "host": "web-1", "servers": ["tls://10.0.0.1:4222"], "connected": True,
            "server": "tls://10.0.0.1:4222", "last_seq": 7, "lag": 0, "spool": 0, "bans_by_origin": {"web-2": 3}}
    S.write(str(path), data)
    assert main(["fleet", "status", "--status-file", str(path)]) == 0
    out = capsys.readouterr().out
    assert "connected to tls://10.0.0.1:4222" in out and "web-2" in out and "last sequence: 7" in out
    assert main(["--json", "fleet", "status", "--status-file", str(path)]) == 0
    assert json.loads(capsys.readouterr().out)["bans_by_origin"] == {"web-2": 3}
    S.write(str(path), {**data, "connected": False})
    assert main(["fleet", "status", "--status-file", str(path)]) == 1
    assert "disconnected" in capsys.readouterr().out
