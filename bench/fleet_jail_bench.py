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
With ``--inproc`` it measures the responder's own work in one process instead (no lab, no second process):
a Responder on the same jail.conf, N lines written to the fleet file, then ``pump`` (read, validate, filter, engine,
sqlite, actions, decision records) until all are decided, beside the floors measured in the same run: a bare
``json.loads`` of the same lines and (``--nft``) one bare nft batch of the same elements. ``--nft`` runs the
actions for real inside a private network namespace of its own (``unshare --net``: the host's firewall is never
touched); without it the jails have no action. ``--profile FILE`` writes a cProfile of the responder part.
It prints figures; it is a benchmark, not a test (docs/performance.md).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import logging
import os
import subprocess
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


def inproc_lines(kind: str, n: int) -> list[dict[str, str]]:
    if kind == "scan":
        return [scan_record(ip) for ip in addresses("198.19.0.1", n)]
    if kind == "v6":
        return [fleet_line(f"2001:db8:{i // 65536:x}:{i % 65536:x}::", f"2001:db8:{i // 65536:x}:{i % 65536:x}::/64")
                for i in range(n)]
    return [fleet_line(ip) for ip in addresses("100.64.0.1", n)]


def inproc(args: argparse.Namespace) -> int:
    """The responder's work in this process (see the docstring): N lines -> pump -> decided and applied."""
    if args.nft and not os.environ.get("PS_BENCH_NETNS"):
        # libnftables works on this process's namespace: a private one, which only the bench's tables enter
        module = __spec__.name if __spec__ is not None else "bench.fleet_jail_bench"
        argv = ["unshare", "--net", "--", sys.executable, "-m", module, *sys.argv[1:]]
        return subprocess.run(argv, env={**os.environ, "PS_BENCH_NETNS": "1"}, check=False).returncode
    from portsentinel.common.systemd import journal_available
    from portsentinel.responder.adapters.decisions import DecisionLog
    from portsentinel.responder.adapters.libnft import NftRunner
    from portsentinel.responder.adapters.nftbatch import NftBatch
    from portsentinel.responder.adapters.runner import SubprocessRunner
    from portsentinel.responder.service import Options, Responder

    logging.getLogger("portsentinel").setLevel(logging.ERROR)  # no per-ban line on stderr (the records count)
    n, kind = args.bans, args.kind
    journal = journal_available() and bool(os.environ.get("PORTSENTINEL_PRIVATE_JOURNALD"))
    print(machine())
    actions = "nftables (private netns)" if args.nft else "none"
    print(time.strftime("%Y-%m-%d %H:%M:%S %Z"), f"| in-process, {n} lines ({kind}), actions {actions}, "
          f"decisions to {'journald' if journal else 'JSON lines'}")
    with tempfile.TemporaryDirectory(prefix="ps-fleetjail-") as tmp:
        base = Path(tmp)
        for name in ("alerts.jsonl", "remote.jsonl"):
            (base / name).touch()
            os.chmod(base / name, 0o640)
        conf = JAILS.format(base=base)
        if not args.nft:
            conf = conf.replace("action = nftables[name=scan]", "action =").replace(
                "action = nftables[name=fleet]", "action =")
        cfg = make_config(base, conf)
        r = Responder(Options(cfg, base / "state", str(base / "ctl.sock"), backend="pyinotify",
                              wake=str(base / "w.sock"), decisions_jsonl=str(base / "decisions.jsonl"), rearm="",
                              fleet_wake=""))
        r.decisions = r.reporter.decisions = DecisionLog(str(base / "decisions.jsonl"), use_journal=journal)
        r.load()
        now = time.time()
        for jail in r.engine.jails:
            r.executor.start(jail, now=now)
        lines = inproc_lines(kind, n)
        text = "".join(json.dumps(x) + "\n" for x in lines)
        t0 = time.perf_counter()
        for line in text.splitlines():
            json.loads(line)
        t_json = time.perf_counter() - t0
        path, source = (base / "alerts.jsonl", "alerts") if kind == "scan" else (base / "remote.jsonl", "remote")
        chunk = args.chunk or n
        parts = ["".join(json.dumps(x) + "\n" for x in lines[i:i + chunk]) for i in range(0, n, chunk)]
        name = next(s for s in r.sources if s.endswith(f"/{source}.jsonl"))
        prof = cProfile.Profile() if args.profile else None
        c0 = time.process_time()
        t0 = time.perf_counter()
        if prof is not None:
            prof.enable()
        total = 0
        for part in parts:  # as the fleet daemon writes a catch-up: a batch of lines, then a wake-up
            with path.open("a") as f:
                f.write(part)
            while True:
                got = r.pump(name)
                total += got
                if not got:
                    break
            r.reporter.turn_done()
        if prof is not None:
            prof.disable()
        t_resp = time.perf_counter() - t0
        c_resp = time.process_time() - c0
        if prof is not None:
            prof.dump_stats(args.profile)
        banned = sum(1 for (j, _) in r.book.active if j == ("local" if kind == "scan" else "fleet"))
        t_nft = None
        if args.nft:
            set_name = ("scan" if kind == "scan" else "fleet") + ("_v6net" if kind == "v6" else "_v4")
            nb = NftBatch(NftRunner(SubprocessRunner()))
            other = [f"2001:db8:{i // 65536 + 100:x}:{i % 65536:x}::/64" for i in range(n)] if kind == "v6" \
                else addresses("10.96.0.1", n)
            t0 = time.perf_counter()
            for ip in other:
                nb.add(set_name, ip, 3601)
            ok = nb.commit().ok
            t_nft = time.perf_counter() - t0 if ok else None
        r.executor.stop("fleet")
        r.executor.stop("local")
        for src in r.sources.values():
            src.close()
        r.store.close()
        r.decisions.close()
        r.rearm.close()
        r.host.close()
    print(f"\n== {n} lines through the responder in one process ({total} read, {banned} banned)")
    print(f"  {'responder: pump + turn_done':<40} {t_resp * 1000:9.0f} ms -> {n / t_resp:9.0f} bans/s "
          f"({t_resp / n * 1e6:.1f} us a ban; CPU {c_resp / n * 1e6:.1f} us a ban)")
    print(f"  {'floor: json.loads of each line':<40} {t_json * 1000:9.0f} ms -> {n / t_json:9.0f} lines/s "
          f"({t_json / n * 1e6:.1f} us a line)")
    if args.nft:
        if t_nft is None:
            print("  floor: bare nft batch failed")
        else:
            print(f"  {'floor: one bare nft batch, same count':<40} {t_nft * 1000:9.0f} ms -> {n / t_nft:9.0f} "
                  f"bans/s ({t_nft / n * 1e6:.1f} us a ban)")
    return 0 if banned == n else 1


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bans", type=int, default=10_000)
    p.add_argument("--inproc", action="store_true", help="the responder's work in this process (no lab)")
    p.add_argument("--kind", choices=("v4", "v6", "scan"), default="v4", help="--inproc: which lines")
    p.add_argument("--nft", action="store_true", help="--inproc: real nftables actions in a private netns")
    p.add_argument("--profile", metavar="FILE", help="--inproc: cProfile of the responder part")
    p.add_argument("--chunk", type=int, default=0,
                   help="--inproc: write the lines this many at a time, each read and applied before the next "
                        "(the fleet daemon's catch-up writes 2,000 at a time); 0: all at once")
    args = p.parse_args()
    if args.inproc:
        return inproc(args)
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
