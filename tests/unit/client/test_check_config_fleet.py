"""`portsentinel check-config` validates fleet.conf (< fleet.local) with file:line: key errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from portsentinel.client.cli import main

ROOT = Path(__file__).resolve().parents[3]


def test_fleet_conf_checked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conf = tmp_path / "fleet.conf"
    conf.write_text((ROOT / "fleet.conf").read_text())
    (tmp_path / "fleet.local").write_text("[fleet]\nenabled = true\nhost = web-1\norigin_rate = lots\n")
    assert main(["check-config", "--config-dir", str(ROOT), "--fleet-config", str(conf)]) == 1
    err = capsys.readouterr().err
    assert f"error: fleet: {tmp_path}/fleet.local:4: origin_rate: 'lots' is not a whole number" in err
    (tmp_path / "fleet.local").write_text("[fleet]\nenabled = true\nhost = web-1\n")
    assert main(["check-config", "--config-dir", str(ROOT), "--fleet-config", str(conf)]) == 0
    out = capsys.readouterr().out
    assert f"fleet: {conf}, {tmp_path}/fleet.local: OK; host web-1" in out
    (tmp_path / "fleet.local").write_text("[fleet]\nhost = bad name\n")
    assert main(["check-config", "--config-dir", str(ROOT), "--fleet-config", str(conf), "--no-fleet"]) == 0
