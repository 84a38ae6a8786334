#!/usr/bin/env python3
"""Fragment floods against the detector, side by side with an unfragmented flood in the same run (issue 9 §1).

Run as root: ``.venv/bin/python -m bench.frag_bench [--count 1000000] [--rate 100000]``. Everything happens in
a fresh namespace lab (tests/lab/netns.py); trafgen runs only in the attacker namespace, bounded by a packet
count and ``timeout``, paced by trafgen and a token bucket on the attacker's own interface. The detector runs
the atcp sentry on every port (bench/detector_pps.py's configuration), pinned to its own CPU.

Runs, each ``--count`` packets at ``--rate`` pps:
  syn       unfragmented SYNs from one source to ports 1-1024: the hot path, the baseline
  frags     random spoofed IPv4 fragments (random source, identification and offset, MF set: every one a
            new reassembly queue, none completes): the reassembly table at its caps
  frags6    the same with IPv6 fragment headers (random source, identification, offset and M flag)
  frags+probes   the IPv4 flood with ``--probes`` unfragmented SYNs from one source to distinct ports sent
            in the middle of it: how many the detector counted
Prints packets/s processed, kernel drops, CPU, RSS by packets sent, and the reassembly counters.
"""

from __future__ import annotations

import argparse
import ipaddress
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.detector_pps import (
    Bench,
    Row,
    cpu_seconds,
    detail,
    mac,
    machine,
    mem_kb,
    pace,
    table,
    trafgen,
    trafgen_conf,
    wait_idle,
)
from tests.lab.netns import Lab, lab_problem, sweep_stale


def frag_conf(lab: Lab, path: Path) -> Path:
    path.write_text(f"{{ eth(da={mac(lab.victim)}, sa={mac(lab.attacker)}, type=0x0800), "
                    f"ipv4(sa=drnd(), da={lab.victim.addr4}, id=drnd(), mf, frag=drnd(), prot=6, ttl=64), "
                    "drnd(16) }\n")
    return path


def frag6_conf(lab: Lab, path: Path) -> Path:
    dst = ", ".join(f"0x{b:02x}" for b in ipaddress.IPv6Address(lab.victim.addr6).packed)
    # IPv6 header (payload 24, next header 44, hop limit 64, random source), then a fragment header for TCP
    # with random offset/M and identification, then 16 random bytes.
    path.write_text(f"{{ eth(da={mac(lab.victim)}, sa={mac(lab.attacker)}, type=0x86dd), "
                    f"0x60, 0, 0, 0, 0, 24, 44, 64, drnd(16), {dst}, 6, 0, drnd(2), drnd(4), drnd(16) }}\n")
    return path


def probe_conf(lab: Lab, path: Path, count: int) -> Path:
    path.write_text(f"{{ eth(da={mac(lab.victim)}, sa={mac(lab.attacker)}, type=0x0800), "
                    f"ipv4(sa={lab.attacker.addr4}, da={lab.victim.addr4}, ttl=64), "
                    f"tcp(sp=40000, dp=dinc(2000, {2000 + count - 1}), syn, win=1024) }}\n")
    return path


def run(bench: Bench, name: str, conf: Path, total: int, rate: int, probes: Path | None = None,
        nprobes: int = 0) -> Row:
    lab = bench.lab
    pace(lab, rate)
    det = bench.detector().start()
    assert det.proc is not None
    pid = det.proc.pid
    marks = sorted({m for m in (100_000, 250_000, 500_000, 750_000) if m < total} | {total})
    samples: list[tuple[int, int, int]] = []
    try:
        time.sleep(0.5)
        cpu0, tx0 = cpu_seconds(pid), bench.offered()
        limit = int(total / min(rate, 10_000)) + 30  # a loaded machine's trafgen sends far below --rate
        gen = lab.attacker.popen(["timeout", str(limit), *trafgen(lab, conf, total, rate)],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        t0 = time.monotonic()
        probed = probes is None
        while gen.poll() is None and time.monotonic() - t0 < limit + 5:
            sent = bench.offered() - tx0
            mem = mem_kb(pid)
            while marks and sent >= marks[0]:
                samples.append((marks.pop(0), mem["VmRSS"], mem["VmHWM"]))
            if not probed and sent >= total // 3:
                assert probes is not None
                lab.attacker.run(["timeout", "60", *trafgen(lab, probes, nprobes, rate)], check=False, timeout=70)
                probed = True
            time.sleep(0.1)
        elapsed = time.monotonic() - t0
        sent = bench.offered() - tx0
        lag = wait_idle(pid, limit=60)
        mem = mem_kb(pid)
        samples.append((sent, mem["VmRSS"], mem["VmHWM"]))
        cpu1 = cpu_seconds(pid)
        time.sleep(1.2)  # one more tick: the kernel's drop counter is read once a second
    finally:
        det.stop()
        pace(lab, None)
    recs = det.records()
    d = detail(recs)
    row = Row(name, "trafgen", elapsed, sent, d.get("packets", 0), d.get("drops"), cpu1 - cpu0, mem["VmHWM"], lag,
              len([r for r in recs if r.get("PS_EVENT") in ("scan", "summary")]), extra=d)
    row.extra["samples"] = samples
    if probes is not None:
        src = lab.attacker.addr4
        hits = max([int(r.get("PS_HITS", 0)) for r in recs if r.get("PS_SRC") == src] or [0])
        row.extra["probes_sent"], row.extra["probes_counted"] = nprobes, hits
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=1_000_000, help="packets per run (default 1,000,000)")
    ap.add_argument("--rate", type=int, default=100_000, help="paced rate in pps (default 100,000)")
    ap.add_argument("--probes", type=int, default=1000, help="unfragmented probes inside the flood (default 1000)")
    ap.add_argument("--parts", default="syn,frags,frags6,frags+probes",
                    help="comma-separated: syn,frags,frags6,frags+probes")
    args = ap.parse_args()
    parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    problem = lab_problem()
    if problem:
        print(f"bench: {problem}", file=sys.stderr)
        return 2
    print(f"machine: {machine()}")
    print(f"command: {' '.join([sys.executable, '-m', 'bench.frag_bench', *sys.argv[1:]])}")
    sweep_stale()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="psfrag-") as tmp, Lab() as lab:
        work = Path(tmp)
        bench = Bench(lab, work, 0.0)
        frags = frag_conf(lab, work / "frags.cfg")
        if "syn" in parts:
            rows.append(run(bench, f"unfragmented SYNs @ {args.rate:,}", trafgen_conf(lab, work / "syn.cfg"),
                            args.count, args.rate))
            print(table(rows[-1:]).splitlines()[-1], flush=True)
        if "frags" in parts:
            rows.append(run(bench, f"random fragments @ {args.rate:,}", frags, args.count, args.rate))
            print(table(rows[-1:]).splitlines()[-1], flush=True)
        if "frags6" in parts:
            rows.append(run(bench, f"random IPv6 fragments @ {args.rate:,}", frag6_conf(lab, work / "frags6.cfg"),
                            args.count, args.rate))
            print(table(rows[-1:]).splitlines()[-1], flush=True)
        if "frags+probes" in parts:
            rows.append(run(bench, f"fragments + {args.probes} probes @ {args.rate:,}", frags, args.count,
                            args.rate, probe_conf(lab, work / "probes.cfg", args.probes), args.probes))
            print(table(rows[-1:]).splitlines()[-1], flush=True)
    print()
    print(table(rows))
    print()
    for r in rows:
        keep = {k: v for k, v in r.extra.items() if k != "samples" and (k.startswith(("frag_", "probes", "drops",
                                                                                       "packets", "bad_")))}
        print(f"{r.name}: {' '.join(f'{k}={v}' for k, v in keep.items())}")
        print("  RSS by packets sent: " + ", ".join(f"{s:,} → {rss / 1024:.1f} MB (peak {hwm / 1024:.1f} MB)"
                                                   for s, rss, hwm in r.extra["samples"]))
    print("\ncpu % is CPU seconds / flood seconds × 100 (one core); seen pps is what the detector counted / flood "
          "seconds; lag is how long it kept working after the generator stopped.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
