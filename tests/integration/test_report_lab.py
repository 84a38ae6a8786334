"""portsentinel report on a lab run (docs/metrics.md): the detector and the responder write to the private journald
while nmap scans the victim from two sources; the terminal report's numbers equal the journal's, and the HTML
report opens in headless Chromium (inside the victim namespace: no network) with no console message, and its
screenshot is kept in the test's temp dir."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.lab.detector import DetectorProcess, nmap, tool
from tests.lab.netns import Host, Lab
from tests.lab.pipeline import ResponderProcess, make_config, per_address

pytestmark = pytest.mark.lab

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--enable-logging=stderr", "--v=0",
                  "--window-size=1100,1600"]


def chromium(host: Host, page: Path, screenshot: Path, profile: Path) -> list[str]:
    """Open ``page`` in headless Chromium inside ``host``, save a screenshot; the console messages it logged."""
    exe = shutil.which("chromium")
    if exe is None:
        pytest.fail("chromium missing: run scripts/setup.sh --test")
    out = host.run(["timeout", "120", exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                    f"--screenshot={screenshot}", page.as_uri()], check=False, timeout=150)
    assert screenshot.exists() and screenshot.stat().st_size > 1000, out.stderr[-3000:]
    return [line for line in out.stderr.splitlines() if ":CONSOLE" in line]


def journal(*matches: str) -> list[dict[str, str]]:
    out = subprocess.run(["journalctl", "--no-pager", "-o", "json", *matches], capture_output=True, text=True,
                         check=True, timeout=60)
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


def figure(text: str, name: str) -> int:
    """A headline figure of the terminal report ("  scans      12  ▁▃█")."""
    m = re.search(rf"^\s+{name}\s+(\d+)", text, re.M)
    assert m is not None, text
    return int(m.group(1))


def test_report_from_the_journal(lab: Lab, tmp_path: Path, journald: str) -> None:
    sources = [a4 for a4, _ in lab.aliases(lab.attacker, 2)]
    conf = tmp_path / "detector.conf"
    conf.write_text("[detector]\nmodes = atcp\nadvanced_tcp = 100\n")
    jail = ("[DEFAULT]\nbantime = 120\nbantime.increment = false\n"
            "[portsentinel]\nenabled = true\nfilter = portsentinel\naction = nftables[name=scan]\n")
    with DetectorProcess(lab.victim, tmp_path / "alerts.jsonl", config=conf, output="journal",
                         extra=["--wake", str(tmp_path / "wake.sock")]) as det, \
            ResponderProcess(lab.victim, tmp_path, make_config(tmp_path, jail), backend="systemd") as resp:
        for src in sources:
            nmap(lab.attacker, "-sS", lab.victim.addr4, "1-40", source=src, extra=["-T5", "--min-rate", "2000"])
        for src in sources:
            assert resp.wait_for(lambda r, s=src: r.get("PS_EVENT") == "ban" and r.get("PS_SRC") == s), resp.stderr()
        assert resp.stop() == 0
        assert det.stop() == 0
    html, shot = tmp_path / "report.html", tmp_path / "report.png"
    before = time.time()
    out = subprocess.run([tool("portsentinel"), "report", "--since", "1d", "--top", "100000", "--html",
                          str(html)],
                         capture_output=True, text=True, timeout=120)
    after = time.time()
    assert out.returncode == 0, out.stderr
    # The journal's own figures over the same day. Other tests of the session may have written records of their
    # own (without PS_TIME, or with a replayed one): counted by the same rules, the report's record time (PS_TIME,
    # else journald's) inside the day, a scan needing its source. A record at the range's very edge is refused.
    def recent(rec: dict[str, str]) -> bool:
        try:
            t = float(rec["PS_TIME"])
        except (KeyError, ValueError):
            t = int(rec["__REALTIME_TIMESTAMP"]) / 1e6
        inside = after - 86400 <= t < before  # in the report's range whenever in [before, after] it ran
        assert inside or t < before - 86400 or t >= after, f"a record at the range's edge: {rec}"
        return inside

    detector = [r for r in journal("SYSLOG_IDENTIFIER=portsentinel-detector") if recent(r) and r.get("PS_SRC")]
    scans = [r for r in detector if r.get("PS_EVENT") == "scan"]
    bans = [r for e in journal("SYSLOG_IDENTIFIER=portsentinel-responder", "PS_EVENT=ban") for r in per_address(e)
            if recent(r) and r.get("PS_JAIL") and not r.get("PS_DETAIL", "").startswith("retry=")]
    sources_seen = {r["PS_SRC"] for r in detector if r.get("PS_EVENT") in ("scan", "summary")}
    assert {r["PS_SRC"] for r in scans} >= set(sources) and {r.get("PS_SRC") for r in bans} >= set(sources)
    text = out.stdout
    assert figure(text, "scans") == len(scans), text
    assert figure(text, "bans") == len(bans), text
    assert figure(text, "sources") == len(sources_seen), text
    for src in sources:
        row = next(line for line in text.splitlines() if line.strip().startswith(src + " "))
        assert int(row.split()[1]) == sum(1 for r in scans if r["PS_SRC"] == src)  # its scan records
        assert int(row.split()[4]) == sum(1 for r in bans if r.get("PS_SRC") == src)  # its bans
    nft = sum(1 for r in bans if "nftables" in r.get("PS_ACTION", "").split(","))
    assert re.search(rf"^\s+nftables\s+{nft}\s", text, re.M), text
    # The HTML opens in a real browser with nothing on the console; the screenshot stays as the test's artifact.
    assert chromium(lab.victim, html, shot, tmp_path / "profile") == []
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_console_check_can_fail(lab: Lab, tmp_path: Path) -> None:
    """The console check above sees a page's console message (so its empty answer means something)."""
    page = tmp_path / "bad.html"
    page.write_text('<!DOCTYPE html><html><body><p>x</p><script>console.error("marker-1234")</script></body></html>')
    logged = chromium(lab.victim, page, tmp_path / "bad.png", tmp_path / "profile")
    assert any("marker-1234" in line for line in logged)
