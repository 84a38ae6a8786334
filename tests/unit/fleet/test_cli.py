"""portsentinel-fleet's command line: --check, a disabled fleet, configuration errors with file:line."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from portsentinel.fleet.cli import main


def test_check_disabled_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    conf = tmp_path / "fleet.conf"
    conf.write_text("[fleet]\nenabled = false\n")
    assert main(["--config", str(conf), "--check"]) == 0
    assert "ok" in capsys.readouterr().out
    notify = tmp_path / "notify"
    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.bind(str(notify))
    monkeypatch.setenv("NOTIFY_SOCKET", str(notify))
    assert main(["--config", str(conf)]) == 0  # disabled: nothing runs, and systemd hears READY
    assert b"READY=1" in rx.recv(256)
    rx.close()
    conf.write_text("[fleet]\nenabled = true\nhost = a\nservers = nats://10.0.0.1\n")
    assert main(["--config", str(conf), "--check"]) == 2
    assert f"{conf}:4: servers: " in capsys.readouterr().err
