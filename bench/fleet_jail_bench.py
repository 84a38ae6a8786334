#!/usr/bin/env python3
"""The responder's [fleet] jail (issue 13): N remote ban lines appended at once to the fleet daemon's file, side by
side in one run with the same number of detector scan records through a local jail (the bulk path's baseline).

Run as root inside a private journald (the responder's records go to it):
    unshare --mount --propagation private --fork -- bash scripts/with-journald.sh \\
        .venv/bin/python -m bench.fleet_jail_bench --bans 10000

One responder in the victim namespace of a fresh lab (tests/lab/netns.py) with two jails: ``local`` (filter
portsentinel, action nftables[name=scan]) and ``fleet`` (filter portsentinel-fleet, action nftables[name=fleet]).
Each case writes N lines in one write() and times until the jail's nft set holds all N (polled every 50 ms, so
figures are ±50 ms):
  local scan records     N IPv4 sources, the detector's records
  fleet, IPv4            N remote bans of addresses (one origin)
  fleet, IPv6 /64        N remote bans of /64 networks (PS_SRC_NET), as origins ban IPv6 sources
It prints figures; it is a benchmark, not a test (docs/performance.md).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from bench.responder_lab import addresses, machine, scan_record, set_count
from tests.lab.netns import Host, Lab, lab_problem, sweep_stale
from tests.lab.pipeline import ResponderProcess, make_config

JAILS = """[DEFAULT]
backend = pyinotify
bantime = 3600
bantime.increment = false
maxbans_per_minute = 0

[local]
enabled = true
filter = portsentinel
logpath = {base}/alerts.jsonl
action = nftables[name=scan]

[fleet]
enabled = true
filter = portsentinel-fleet
logpath = {base}/remote.jsonl
logowner = root
bantime.maxtime = 1d
action = nftables[name=fleet]
"""


def fleet_line(src: str, net: str = "") -> dict[str, str]:
    """A ban line as portsentinel-fleet writes it (portsentinel/fleet/lines.py)."""
    now = time.time()
    rec = {"SYSLOG_IDENTIFIER": "portsentinel-fleet", "PS_EVENT": "ban", "MESSAGE": f"fleet: {net or src} banned",
           "PS_SRC": src, "PS_ORIGIN": "host-a", "PS_ORIGIN_JAIL": "portsentinel", "PS_UNTIL": f"{now + 3000:.3f}",
           "PS_SCAN": "syn", "PS_VERIFIED": "0", "PS_OFFENCE": "1", "PS_ORIGINS": "1", "PS_TIME": f"{now:.6f}"}
    if net:
        rec["PS_SRC_NET"] = net
    return rec


def timed(host: Host, path: Path, records: list[dict[str, str]], set_name: str, limit: float = 300) -> float | None:
    """Seconds from one write() of ``records`` to the set holding all of them (None: not within ``limit``)."""
    payload = "".join(json.dumps(r) + "\n" for r in records).encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    t0 = time.monotonic()
    os.write(fd, payload)
    os.close(fd)
    while time.monotonic() - t0 < limit:
        if set_count(host, set_name) >= len(records):
            return time.monotonic() - t0
        time.sleep(0.05)
    return None


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bans", type=int, default=10_000)
    args = p.parse_args()
    problem = lab_problem()
    if problem:
        print(f"fleet jail bench: {problem}", file=sys.stderr)
        return 2
    if not os.environ.get("PORTSENTINEL_PRIVATE_JOURNALD"):
        print("fleet jail bench: run it inside scripts/with-journald.sh (see the docstring)", file=sys.stderr)
        return 2
    n = args.bans
    print(machine())
    print(time.strftime("%Y-%m-%d %H:%M:%S %Z"), f"| {n} bans per case")
    sweep_stale()
    results: list[tuple[str, float | None]] = []
    with tempfile.TemporaryDirectory(prefix="ps-fleetjail-") as tmp, Lab() as lab:
        base = Path(tmp)
        for name in ("alerts.jsonl", "remote.jsonl"):
            (base / name).touch()
            os.chmod(base / name, 0o640)
        cfg = make_config(base, JAILS.format(base=base))
        with ResponderProcess(lab.victim, base, cfg, backend="pyinotify"):
            scans = [scan_record(ip) for ip in addresses("198.19.0.1", n)]
            results.append(("local jail, detector scan records (IPv4)",
                            timed(lab.victim, base / "alerts.jsonl", scans, "scan_v4")))
            v4 = [fleet_line(ip) for ip in addresses("100.64.0.1", n)]
            results.append(("fleet jail, remote bans of IPv4 addresses",
                            timed(lab.victim, base / "remote.jsonl", v4, "fleet_v4")))
            v6 = [fleet_line(f"2001:db8:{i // 65536:x}:{i % 65536:x}::", f"2001:db8:{i // 65536:x}:{i % 65536:x}::/64")
                  for i in range(n)]
            results.append(("fleet jail, remote bans of IPv6 /64 networks",
                            timed(lab.victim, base / "remote.jsonl", v6, "fleet_v6")))
    print(f"\n== {n} lines written at once -> all {n} in the jail's nft set (responder in the victim namespace)")
    for label, seconds in results:
        if seconds is None:
            print(f"  {label:<48} not all in force within the limit")
        else:
            print(f"  {label:<48} {seconds * 1000:9.0f} ms -> {n / seconds:9.0f} bans/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
