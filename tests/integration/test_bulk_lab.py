"""The bulk path in the lab: 10,000 scan records arriving at once are all banned in the victim namespace's nft set
(one transaction per table) and in force (a banned source's ping is dropped), every address has its ban record in
the private journald, and the records are aggregated (a few dozen entries, PS_SRC repeated) instead of 10,000."""

from __future__ import annotations

import ipaddress
import json
import os
import time
from pathlib import Path

import pytest

from tests.lab.netns import Lab
from tests.lab.nftset import set_addresses
from tests.lab.pipeline import ResponderProcess, make_config

pytestmark = pytest.mark.lab

N = 10_000


def _record(src: str) -> str:
    return json.dumps({"MESSAGE": f"attackalert: TCP SYN/Normal scan from host: {src}/{src} to TCP port: 1",
                       "SYSLOG_IDENTIFIER": "portsentinel-detector", "PS_EVENT": "scan", "PS_SRC": src,
                       "PS_PROTO": "tcp", "PS_PORT": "1", "PS_SCAN": "syn", "PS_MODE": "stcp", "PS_VERIFIED": "0"})


def test_ten_thousand_records_at_once_are_all_in_the_set(lab: Lab, tmp_path: Path, journald: str) -> None:
    cfg = make_config(tmp_path, f"[DEFAULT]\nlogpath = {tmp_path}/alerts.jsonl\nbantime = 3600\n"
                                "maxbans_per_minute = 0\n[portsentinel]\nenabled = true\nfilter = portsentinel\n"
                                "action = nftables[name=scan]\n")
    alerts = tmp_path / "alerts.jsonl"
    alerts.touch()
    os.chmod(alerts, 0o640)
    start = int(ipaddress.IPv4Address("100.64.0.1"))  # outside every lab subnet (198.18.N.0/24), as in test_restore_lab
    ips = [str(ipaddress.IPv4Address(start + i)) for i in range(N)]
    with ResponderProcess(lab.victim, tmp_path, cfg, backend="pyinotify") as resp:
        fd = os.open(alerts, os.O_WRONLY | os.O_APPEND)
        os.write(fd, "".join(_record(ip) + "\n" for ip in ips).encode())  # all at once
        os.close(fd)
        deadline = time.monotonic() + 60
        held: set[str] = set()
        while time.monotonic() < deadline and len(held) < N:
            time.sleep(0.5)
            held = set_addresses(lab.victim, "scan_v4", missing_ok=True)
        assert held == set(ips), f"{len(held)} of {N} in the set; {resp.stderr()[-2000:]}"
        recs: list[dict[str, str]] = []
        while time.monotonic() < deadline:
            recs = [r for r in resp.records() if r.get("PS_EVENT") == "ban" and r.get("PS_JAIL") == "portsentinel"]
            if len(recs) >= N:
                break
            time.sleep(0.25)
        assert sorted(r["PS_SRC"] for r in recs) == sorted(ips)  # every address, each once
        batches = [r for r in recs if r.get("PS_BATCH")]
        # aggregated (one journal entry stands for up to 256 bans); a read that caught the file mid-write may
        # leave a turn with fewer than 16 bans, whose records are written one by one
        assert len(batches) >= N - 100
        assert all(int(r["PS_BATCH"]) <= 256 for r in batches)
        status = resp.ask("status")
        assert status["jails"]["portsentinel"]["bans_total"] == N
        # in force in the kernel, not only listed: the last address's ping is dropped, an unbanned one answered
        assert not _answers(lab, ips[-1]) and not _answers(lab, ips[N // 2])
        assert _answers(lab, "100.127.0.1")


def _answers(lab: Lab, src: str) -> bool:
    """One ping from the attacker namespace with source ``src`` to the victim (bounded: one packet, 1 s)."""
    lab.attacker.run(["ip", "addr", "replace", f"{src}/32", "dev", lab.attacker.iface])
    lab.victim.run(["ip", "route", "replace", f"{src}/32", "dev", lab.victim.iface])
    try:
        return lab.attacker.run(["ping", "-c1", "-W1", "-I", src, lab.victim.addr4], check=False).returncode == 0
    finally:
        lab.attacker.run(["ip", "addr", "del", f"{src}/32", "dev", lab.attacker.iface], check=False)
