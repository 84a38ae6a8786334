#!/usr/bin/env python3
"""The responder's restore at start (issue 13 "Speed", restart): side by side in one run.

Run as root:  .venv/bin/python -m bench.restore_bench --bans 1000000 --kernel-bans 200000 --old-bans 100000

Everything with a kernel happens in a fresh namespace lab (tests/lab/netns.py): nft runs only in the victim
namespace. Each part fills a fresh sqlite store (the responder's schema) with bans of one jail (action nftables,
its sets ``flags interval,timeout``), 1% of them expired, and measures:
  python     Keeper.restore of --bans rows with a runner that only takes the nft text (no kernel): the Python
             cost from sqlite rows to the batch text (expired rows moved in one statement, never-ban check)
  restore    Keeper.restore of --kernel-bans rows into the victim's nft set (libnftables, one transaction)
  bare       `nft -f` of a file holding the same elements (one transaction, no Python): the kernel's floor
  old        the per-ban restore (BanVars and a plan per ban: Executor.ban_many(restoring=True)) of --old-bans
It prints figures; it is a benchmark, not a test (docs/performance.md).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import sqlite3
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.responder_bench import PY, machine
from tests.lab.netns import Lab, lab_problem, sweep_stale

ROOT = Path(__file__).resolve().parents[1]
JAIL = "b"


def fill(db: Path, n: int, now: float) -> list[str]:
    from portsentinel.responder.adapters.store import Store

    Store(str(db)).close()
    start = int(ipaddress.IPv4Address("100.64.0.1"))
    ips = [str(ipaddress.IPv4Address(start + i)) for i in range(n)]
    info = json.dumps({"port": "1", "proto": "tcp", "scan": "syn"}, sort_keys=True)
    con = sqlite3.connect(str(db))
    with con:
        con.executemany("INSERT INTO bans VALUES (?,?,?,?,?,?,?)",
                        ((JAIL, ip, now - 60, (now - 5) if i % 100 == 99 else (now + 3600 + i % 600), 1, 1, info)
                         for i, ip in enumerate(ips)))
    con.close()
    return ips


class TextOnly:
    """A runner that keeps the nft text and runs nothing (the Python part alone)."""

    def __init__(self) -> None:
        self.chars = 0

    def run(self, argv: Sequence[str], *, input: str | None = None, timeout: float | None = None) -> Any:
        from portsentinel.responder.adapters.runner import Result

        self.chars += len(input or "")
        return Result(tuple(argv), 0)


def inner(kind: str, n: int) -> dict[str, Any]:
    """One part, in the victim namespace (or anywhere for ``python``)."""
    from portsentinel.responder.actions.executor import Executor
    from portsentinel.responder.adapters.store import Store
    from portsentinel.responder.config.jailconf import ActionRef, JailConfig
    from portsentinel.responder.core.bans import BanBook
    from portsentinel.responder.core.guard import NeverBan
    from portsentinel.responder.core.keeper import Keeper

    with tempfile.TemporaryDirectory(prefix="ps-restore-") as tmp:
        now = time.time()
        db = Path(tmp) / "s.sqlite3"
        ips = fill(db, n, now)
        runner = TextOnly() if kind == "python" else None
        ex = Executor(ROOT / "actions.d", lambda *a, **k: None, runner)  # type: ignore[arg-type]
        ex.configure(JailConfig(name=JAIL, where="bench", actions=[ActionRef("nftables", {"name": JAIL}, "bench")]))
        never = NeverBan(own=["192.0.2.1"])
        keeper = Keeper(Store(str(db)), BanBook(), ex, lambda *a, **k: None, clock=lambda: now)
        if kind in ("python", "restore"):
            keeper.pending.due = lambda t: []  # type: ignore[method-assign]  # the 1% expired: lifted later
            t0 = time.perf_counter()
            keeper.restore([JAIL], protected=lambda b: never.why(b.ip))
            seconds = time.perf_counter() - t0
        elif kind == "old":
            ex.start(JAIL, now=now)
            t0 = time.perf_counter()
            bans = [b for b in keeper.store.bans() if b.expires > now]
            for b in bans:
                keeper.book.add(b)
            ex.ban_many(bans, now=now, restoring=True)
            seconds = time.perf_counter() - t0
        else:  # bare: the same elements as a file for `nft -f`
            import subprocess

            ex.start(JAIL, now=now)
            elems = [f"{ip} timeout {3600 + i % 600 + 1}s" for i, ip in enumerate(ips) if i % 100 != 99]
            path = Path(tmp) / "elems.nft"
            path.write_text("".join(f"add element inet portsentinel {JAIL}_v4 {{ {', '.join(elems[i:i + 5000])} }}\n"
                                    for i in range(0, len(elems), 5000)))
            t0 = time.perf_counter()
            subprocess.run(["nft", "-f", str(path)], check=True, timeout=900)
            seconds = time.perf_counter() - t0
        held = 0
        if kind != "python":
            import subprocess

            out = subprocess.run(["nft", "list", "set", "inet", "portsentinel", f"{JAIL}_v4"], capture_output=True,
                                 text=True, timeout=300).stdout
            held = out.count(" timeout ") - 0
            subprocess.run(["nft", "delete", "table", "inet", "portsentinel"], check=False)
        return {"kind": kind, "n": n, "seconds": seconds, "held_lines": held}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bans", type=int, default=1_000_000, help="rows for the Python-only restore")
    p.add_argument("--kernel-bans", type=int, default=200_000, help="rows for the restore and the bare nft -f")
    p.add_argument("--old-bans", type=int, default=100_000, help="rows for the per-ban (old) restore")
    p.add_argument("--inner", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.inner:
        print(json.dumps(inner(args.inner[0], int(args.inner[1]))))
        return 0
    problem = lab_problem()
    if problem:
        print(f"restore bench: {problem}", file=sys.stderr)
        return 2
    print(machine())
    print(time.strftime("%Y-%m-%d %H:%M:%S %Z"), flush=True)
    sweep_stale()
    rows = []
    with Lab() as lab:
        for kind, n in (("python", args.bans), ("restore", args.kernel_bans), ("bare", args.kernel_bans),
                        ("old", args.old_bans), ("restore", args.old_bans)):
            res = lab.victim.run([PY, "-m", "bench.restore_bench", "--inner", kind, str(n)], timeout=1800)
            r = json.loads(res.stdout.strip().splitlines()[-1])
            rows.append(r)
            print(f"  {kind:<8} {n:>9} rows  {r['seconds']:9.2f} s  {n / r['seconds']:11.0f} rows/s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
