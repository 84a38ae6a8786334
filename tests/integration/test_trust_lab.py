"""Values and writers that must never get through (issue 10 items 6, 7, 8), against a real responder in the lab.

- hostile addresses (zone ids, v4-mapped loopback and own addresses, control characters) in records and on
  the control socket: hosts.deny (a file the test made) gets only plain addresses;
- the shipped sshd jail: a program named sshd run by an unprivileged user bans nothing, root's line does;
- a flood of forged records: a handful of aggregate records, no ban.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.lab.detector import ROOT, tool
from tests.lab.netns import Lab
from tests.lab.pipeline import ResponderProcess, make_config

pytestmark = pytest.mark.lab

NOBODY = ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups"]


def _scan(src: str) -> dict[str, str]:
    return {"MESSAGE": "attackalert: TCP SYN/Normal scan from host: x/y to TCP port: 1",
            "SYSLOG_IDENTIFIER": "portsentinel-detector", "PS_EVENT": "scan", "PS_SRC": src, "PS_PROTO": "tcp",
            "PS_PORT": "1", "PS_SCAN": "syn", "PS_MODE": "stcp", "PS_VERIFIED": "0"}


def _wait(pred: object, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def test_hostile_addresses_never_reach_hosts_deny(mlab: Lab, tmp_path: Path) -> None:
    deny = tmp_path / "hosts.deny"
    deny.write_text("# made by the test\n")
    alerts = tmp_path / "alerts.jsonl"
    alerts.touch(mode=0o640)
    cfg = make_config(tmp_path, f"[DEFAULT]\nlogpath = {alerts}\nbantime = 60\nbantime.increment = false\n"
                                f"[portsentinel]\nenabled = true\nfilter = portsentinel\n"
                                f"action = hosts-deny[file={deny}]\n")
    victim = mlab.victim
    hostile = ["fe80::1%x]\nALL: ALL\n#", "fe80::1%eth0", "198.51.100.9\nALL: ALL", " 198.51.100.10",
               "[2001:db8::9]", "198.51.100.11\x00", "\x1b[2J198.51.100.12"]
    with ResponderProcess(victim, tmp_path, cfg) as resp:
        with open(alerts, "a") as fh:
            for src in hostile:
                fh.write(json.dumps(_scan(src)) + "\n")
            # v4-mapped: loopback and the victim's own address are never banned; a plain one is, as IPv4.
            for src in ("::ffff:127.0.0.1", f"::ffff:{victim.addr4}", "::ffff:198.51.100.13"):
                fh.write(json.dumps(_scan(src)) + "\n")
        assert _wait(lambda: "198.51.100.13" in deny.read_text()), resp.stderr()
        for text in ("fe80::1%x]\nALL: ALL\n#", "fe80::1%eth0", "::ffff:127.0.0.1"):
            answer = resp.ask("ban", "portsentinel", text)
            assert not answer.get("ok"), answer
        assert resp.ask("ban", "portsentinel", "::ffff:198.51.100.14").get("banned") == "198.51.100.14"
        assert _wait(lambda: "198.51.100.14" in deny.read_text())
        recs = resp.records()
        assert sum("unreadable entry" in r["MESSAGE"] for r in recs) == len(hostile)
        never = " ".join(r["MESSAGE"] for r in recs if r.get("PS_EVENT") == "ignored")
        assert "127.0.0.1 not banned: never banned: loopback" in never
        assert f"{victim.addr4} not banned: never banned: own address" in never
        assert {b["ip"] for b in resp.ask("banned")["bans"]} == {"198.51.100.13", "198.51.100.14"}
        assert resp.stop() == 0
    lines = deny.read_text().splitlines()
    mark = "# portsentinel-responder ban"
    assert lines == ["# made by the test", mark, "ALL: 198.51.100.13", mark, "ALL: 198.51.100.14"], lines


def _sshd_config(base: Path) -> Path:
    """The shipped jail.conf, with jail.local enabling the shipped sshd jail (its trust keys untouched)."""
    cfg = make_config(base, (ROOT / "jail.conf").read_text())
    (cfg / "jail.local").write_text("[sshd]\nenabled = true\nmaxretry = 1\nbantime = 60\n"
                                    "action = nftables[name=ssh]\n")
    return cfg


SEND = ("import sys, time\nfrom systemd import journal\njournal.send(sys.argv[1], SYSLOG_IDENTIFIER='sshd')\n"
        "time.sleep(1)\n")  # alive while journald reads _COMM from /proc (a sender gone by then has none)


def _as_sshd(bindir: Path, message: str, user: list[str]) -> subprocess.Popen[bytes]:
    """Write ``message`` to the journal from a program named sshd (Debian's python3 behind a symlink)."""
    fake = bindir / "sshd"
    if not fake.exists():
        fake.symlink_to(os.path.realpath("/usr/bin/python3"))
    return subprocess.Popen([*user, str(fake), "-c", SEND, message], cwd="/")


@pytest.fixture
def bindir() -> Iterator[Path]:
    """A directory any user may run programs from (pytest's tmp_path is root's alone)."""
    path = Path(tempfile.mkdtemp(prefix="portsentinel-test-bin-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


def test_sshd_jail_trusts_only_root(mlab: Lab, tmp_path: Path, journald: str, bindir: Path) -> None:
    cfg = _sshd_config(tmp_path)
    line = "Failed password for root from {} port 4242 ssh2"
    with ResponderProcess(mlab.victim, tmp_path, cfg, backend="systemd") as resp:
        senders = [_as_sshd(bindir, line.format("198.51.100.31"), NOBODY)]  # _COMM=sshd, _UID=65534
        time.sleep(0.3)
        senders.append(_as_sshd(bindir, line.format("198.51.100.32"), []))  # _COMM=sshd, _UID=0
        assert [p.wait(30) for p in senders] == [0, 0]
        banned = resp.wait_for(lambda r: r.get("PS_EVENT") == "ban" and r.get("PS_SRC") == "198.51.100.32", 20)
        assert banned, (resp.stderr(), subprocess.run(["journalctl", "--no-pager", "-n", "15", "-o", "export"],
                                                      capture_output=True, text=True).stdout[-6000:])
        bans = resp.ask("banned")["bans"]
        assert [(b["jail"], b["ip"]) for b in bans] == [("sshd", "198.51.100.32")]
        elements = mlab.victim.run(["nft", "list", "set", "inet", "portsentinel", "ssh_v4"]).stdout
        assert "198.51.100.32" in elements and "198.51.100.31" not in elements
        # The unprivileged line never left journald: no per-entry record about it either.
        assert not [r for r in resp.records() if r.get("PS_SRC") == "198.51.100.31"]
        assert resp.stop() == 0


FLOOD = ("import sys\nfrom systemd import journal\nfor i in range(int(sys.argv[1])):\n"
         " journal.send('attackalert: forged', SYSLOG_IDENTIFIER='portsentinel-detector', PS_EVENT='scan',\n"
         "              PS_SRC=f'198.51.{100 + i // 250}.{i % 250 + 1}', PS_PROTO='tcp', PS_PORT='1')\n")


def test_forged_record_flood_is_reported_in_aggregate(mlab: Lab, tmp_path: Path, journald: str) -> None:
    """5,000 records from root outside the detector's unit and 200 from another user: no ban, a few records."""
    cfg = make_config(tmp_path, "[DEFAULT]\nbantime = 60\ntrusted_uid = root\n"
                                "trusted_unit = portsentinel-detector.service\n"
                                "[portsentinel]\nenabled = true\nfilter = portsentinel\n"
                                "action = nftables[name=flood]\n")
    with ResponderProcess(mlab.victim, tmp_path, cfg, backend="systemd") as resp:
        subprocess.run([*NOBODY, tool("python"), "-c", FLOOD, "200"], check=True, timeout=60, cwd="/")
        subprocess.run([tool("python"), "-c", FLOOD, "5000"], check=True, timeout=120, cwd="/")
        assert _wait(lambda: resp.ask("status").get("forged") == 5000, timeout=60), resp.ask("status")
        assert resp.ask("banned")["bans"] == []
        assert resp.stop() == 0
    forged = [r for r in resp.records() if r.get("PS_EVENT") == "ignored" and "forged" in r.get("PS_DETAIL", "")]
    counts = [int(re.search(r"forged=(\d+)", r["PS_DETAIL"]).group(1)) for r in forged]  # type: ignore[union-attr]
    assert sum(counts) == 5000 and 1 <= len(forged) <= 3, [r["MESSAGE"] for r in forged]
    assert all("_UID=0" in r["PS_DETAIL"] for r in forged)  # the other user's 200 were never read
