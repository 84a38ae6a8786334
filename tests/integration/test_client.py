"""The client: `portsentinel run` (the README's main job) in the lab, check-config and test-filter."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.lab.detector import nmap, tool
from tests.lab.netns import Lab

pytestmark = pytest.mark.lab


def _client(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tool("portsentinel"), *args], capture_output=True, text=True, timeout=60)


def test_run_main_job_bans_a_scanner(lab: Lab, tmp_path: Path, journald: str) -> None:
    """Detector and responder together on the embedded default, in the victim namespace."""
    sock = str(tmp_path / "ctl.sock")
    with open(tmp_path / "run.err", "wb") as err:
        proc = lab.victim.popen([tool("portsentinel"), "--socket", sock, "run", "--state-dir", str(tmp_path / "state"),
                                 "--config-dir", str(Path(__file__).resolve().parents[2])],
                                stdout=subprocess.DEVNULL, stderr=err)
    deadline = time.monotonic() + 20
    while not (Path(sock).exists() and _client("--socket", sock, "status").returncode == 0):
        assert proc.poll() is None, (tmp_path / "run.err").read_text()
        assert time.monotonic() < deadline, (tmp_path / "run.err").read_text()
        time.sleep(0.1)
    time.sleep(1.0)  # the detector's sentries
    nmap(lab.attacker, "-sS", lab.victim.addr4, "1,11,15")
    deadline = time.monotonic() + 10
    bans: list[dict[str, object]] = []
    while not bans and time.monotonic() < deadline:
        bans = json.loads(_client("--socket", sock, "--json", "banned").stdout or "{}").get("bans", [])
        time.sleep(0.1)
    assert [b["ip"] for b in bans] == [lab.attacker.addr4], (tmp_path / "run.err").read_text()
    assert lab.attacker.addr4 in lab.victim.run(["nft", "list", "table", "inet", "portsentinel"]).stdout
    out = _client("--socket", sock, "status").stdout
    assert "jail portsentinel" in out
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    # Stopping removed the jail's chain and sets: no stale rules.
    assert "chain portsentinel" not in lab.victim.run(["nft", "list", "ruleset"]).stdout


def test_check_config_reports_file_line_key(tmp_path: Path) -> None:
    ok = _client("check-config", "--config-dir", str(Path(__file__).resolve().parents[2]))
    assert ok.returncode == 0, ok.stderr
    cfg = tmp_path / "etc"
    cfg.mkdir()
    root = Path(__file__).resolve().parents[2]
    (cfg / "filter.d").symlink_to(root / "filter.d")
    (cfg / "actions.d").symlink_to(root / "actions.d")
    (cfg / "jail.conf").write_text("[good]\nenabled = true\nfilter = sshd\n\n[bad]\nenabled = true\n"
                                   "filter = portsentinel\nbantime = forever\n\n[bad2]\nenabled = true\n"
                                   "filter = nosuchfilter\n")
    bad = _client("check-config", "--config-dir", str(cfg))
    assert bad.returncode == 1
    assert f"{cfg}/jail.conf:8: [bad] bantime:" in bad.stderr
    assert "nosuchfilter" in bad.stderr
    assert "jail good:" in bad.stdout and "OK" in bad.stdout


def test_test_filter_text_and_json() -> None:
    root = Path(__file__).resolve().parents[2]
    log = root / "tests" / "samples" / "logs" / "sshd-auth.log"
    text = _client("test-filter", "sshd", str(log))
    assert text.returncode == 0
    assert "Lines: 40 lines, 18 matched, 0 ignored, 22 missed" in text.stdout
    doc = json.loads(_client("--json", "test-filter", "sshd", str(log)).stdout)
    assert (doc["lines"], doc["matched"], doc["missed"]) == (40, 18, 22)
