"""portsentinel.fleet.status: the status file, written whole, and the text `portsentinel fleet status` prints."""

from __future__ import annotations

from pathlib import Path

import pytest

from portsentinel.fleet import status as S


def test_write_read_and_format(tmp_path: Path) -> None:
    path = str(tmp_path / "run" / "status.json")
    data = {"time": 1000.0, "host": "web-1", "servers": ["tls://10.0.0.1:4222"], "connected": True,
            "server": "tls://10.0.0.1:4222", "last_seq": 42, "lag": 3, "watcher": "running", "spool": 2,
            "bans_by_origin": {"web-2": 10, "web-3": 1}, "refused": 5, "wake_refused": 2}
    S.write(path, data)
    assert S.read(path) == data and not (tmp_path / "run" / "status.json.tmp").exists()
    text = S.format_status(S.read(path), now=1001.0)
    assert "connected to tls://10.0.0.1:4222" in text and "last sequence: 42 (lag 3)" in text
    assert "web-2" in text and "2 waiting" in text and "refused:       5" in text and "WARNING" not in text
    assert "wake-ups refused: 2" in text
    assert S.format_status(data, now=1100.0).startswith("WARNING: status is 100s old")
    (tmp_path / "bad.json").write_text("[1]")
    with pytest.raises(ValueError):
        S.read(str(tmp_path / "bad.json"))


def test_an_output_the_daemon_cannot_write_is_a_warning() -> None:
    data = {"time": 1000.0, "host": "e", "connected": True, "server": "nats://n1:4222",
            "output_error": "[Errno 28] No space left on device", "output_held": 12}
    text = S.format_status(data, now=1001.0)
    assert text.startswith("WARNING: cannot write the remote bans") and "12 held" in text
    assert not S.format_status({**data, "output_error": None}, now=1001.0).startswith("WARNING")
