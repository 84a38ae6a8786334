#!/usr/bin/env python3
"""The responder's restore at start (issue 13 "Speed": a restart with 1,000,000 bans in force within 5 s), side by
side with the kernel's floor for the same elements, in one run.

Run as root:  .venv/bin/python -m bench.restore_bench --bans 1000000

Everything with a kernel happens in a fresh namespace lab (tests/lab/netns.py): nft runs only in the victim
namespace. Each part fills a fresh sqlite store (the responder's schema) with --bans bans of one jail (action
nftables: addresses in the hash set ``b_v4``), 1% of them expired, and measures, each in a process of its own:
  python    Keeper.restore with a runner that only takes the nft text (no kernel): the Python cost from sqlite
            rows to the transactions' text (expired rows moved in one statement, never-ban check, ban book)
  restore   Keeper.restore into the victim's kernel (libnftables; chunked transactions, committed while the next
            rows are read): until every unexpired ban is in force
  lift      then the unbans of the 1% expired rows, due at once (one nft batch deleting them from the big set)
  bare1     `nft -f` of one file holding the same elements, one transaction (no Python): a floor
  bareN     the same elements as ten files of 100,000 (responder.actions.restore.CHUNK), `nft -f` one after the
            other: the floor for the chunked layout the restore uses
  old       (--old-bans N, default off) the per-ban restore: BanVars and a plan per ban (Executor.ban_many)
Seconds are wall clock; cpu is the part's user + system time (its process and its children: nft), on a shared
machine the steadier figure. The set is listed after the restore: how many elements it holds, and whether --sample
unexpired addresses are in it and as many expired ones are not (listing 1,000,000 takes about a minute of kernel
time; --verify-all lists it after the floors too).
It prints figures; it is a benchmark, not a test (docs/performance.md).
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.responder_lab import PY, machine
from tests.lab.netns import Lab, lab_problem, sweep_stale

ROOT = Path(__file__).resolve().parents[1]
JAIL = "b"
FIRST = 100 << 24 | 64 << 16  # 100.64.0.0/10: outside every lab subnet


def _addr(i: int) -> str:
    a = FIRST + 1 + i
    return f"{a >> 24}.{a >> 16 & 255}.{a >> 8 & 255}.{a & 255}"


def _expired(i: int) -> bool:
    return i % 100 == 99


def fill(db: Path, n: int, now: float) -> None:
    from portsentinel.responder.adapters.store import Store

    Store(str(db)).close()
    info = json.dumps({"port": "1", "proto": "tcp", "scan": "syn"}, sort_keys=True)
    con = sqlite3.connect(str(db))
    with con:
        con.executemany("INSERT INTO bans VALUES (?,?,?,?,?,?,?)",
                        ((JAIL, _addr(i), now - 60, (now - 5) if _expired(i) else (now + 3600 + i % 600), 1, 1, info)
                         for i in range(n)))
    con.close()


class TextOnly:
    """A runner that keeps the nft text and runs nothing (the Python part alone)."""

    def __init__(self) -> None:
        self.chars = 0

    def run(self, argv: Sequence[str], *, input: str | None = None, timeout: float | None = None) -> Any:
        from portsentinel.responder.adapters.runner import Result

        self.chars += len(input or "")
        return Result(tuple(argv), 0)


def _cpu() -> float:
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _bare(tmp: Path, n: int, now: float, files: int) -> tuple[float, float]:
    """The unexpired elements as ``files`` nft files, loaded one after the other: (wall, cpu) seconds."""
    from portsentinel.responder.actions.restore import CHUNK

    elems = [f"{_addr(i)} timeout {3600 + i % 600 + 1}s" for i in range(n) if not _expired(i)]
    size = len(elems) if files == 1 else CHUNK
    paths = []
    for k in range(0, len(elems), size):
        part = elems[k:k + size]
        path = tmp / f"elems{k}.nft"
        path.write_text("".join(f"add element inet portsentinel {JAIL}_v4 {{ {', '.join(part[i:i + 5000])} }}\n"
                                for i in range(0, len(part), 5000)))
        paths.append(path)
    c0, t0 = _cpu(), time.perf_counter()
    for path in paths:
        subprocess.run(["nft", "-f", str(path)], check=True, timeout=900)
    return time.perf_counter() - t0, _cpu() - c0


def _check(n: int, sample: int) -> dict[str, Any]:
    """The set listed: how many elements it holds, whether sampled unexpired addresses are in it and sampled
    expired ones are not. (`nft get element` fetches the whole set too, so one listing is the cheapest check.)"""
    rng = random.Random(n)
    live = [i for i in rng.sample(range(n), min(n, sample * 2)) if not _expired(i)][:sample]
    dead = list(range(99, n, 100))[:sample]
    listed = subprocess.run(["nft", "list", "set", "inet", "portsentinel", f"{JAIL}_v4"], capture_output=True,
                            text=True, timeout=3600).stdout
    words = set(listed.replace(",", " ").split())
    return {"held": listed.count(" expires "), "sample_in": f"{sum(_addr(i) in words for i in live)}/{len(live)}",
            "expired_absent": f"{sum(_addr(i) not in words for i in dead)}/{len(dead)}"}


def _screen(never: Any, ips: list[str]) -> set[str] | None:
    """The responder's restore screen (responder.core.shield.suspects) for this one jail: the addresses that
    start like a protected one (None: all)."""
    sus: set[str] | None = never.suspects(ips)
    return sus


def inner(kind: str, n: int, sample: int, verify: bool) -> dict[str, Any]:
    """One part, in the victim namespace (or anywhere for ``python``)."""
    from portsentinel.responder.actions.executor import Executor
    from portsentinel.responder.adapters.store import Store
    from portsentinel.responder.config.jailconf import ActionRef, JailConfig
    from portsentinel.responder.core.bans import BanBook
    from portsentinel.responder.core.guard import NeverBan
    from portsentinel.responder.core.keeper import Keeper

    out: dict[str, Any] = {"kind": kind, "n": n}
    with tempfile.TemporaryDirectory(prefix="ps-restore-") as tmp:
        now = time.time()
        db = Path(tmp) / "s.sqlite3"
        fill(db, n, now)
        runner = TextOnly() if kind == "python" else None
        ex = Executor(ROOT / "actions.d", lambda *a, **k: None, runner)  # type: ignore[arg-type]
        ex.configure(JailConfig(name=JAIL, where="bench", actions=[ActionRef("nftables", {"name": JAIL}, "bench")]))
        never = NeverBan(own=["192.0.2.1"])
        keeper = Keeper(Store(str(db)), BanBook(), ex, lambda *a, **k: None, clock=lambda: now)
        if kind in ("python", "restore"):
            due = keeper.pending.due
            keeper.pending.due = lambda t: []  # type: ignore[method-assign]  # the 1% expired: lifted below
            c0, t0 = _cpu(), time.perf_counter()
            keeper.restore([JAIL], protected=lambda b: never.why(b.ip), screen=lambda jail, ips: _screen(never, ips))
            out["seconds"], out["cpu"] = time.perf_counter() - t0, _cpu() - c0
            if kind == "restore":
                keeper.pending.due = due  # type: ignore[method-assign]
                c0, t0 = _cpu(), time.perf_counter()
                keeper.unban_due()
                out["lift_seconds"], out["lift_cpu"] = time.perf_counter() - t0, _cpu() - c0
                out["lifted"] = n // 100 - len(keeper.pending)
        elif kind == "old":
            ex.start(JAIL, now=now)
            c0, t0 = _cpu(), time.perf_counter()
            bans = [b for b in keeper.store.bans() if b.expires > now]
            keeper.book.add_many(bans)
            ex.ban_many(bans, now=now, restoring=True)
            out["seconds"], out["cpu"] = time.perf_counter() - t0, _cpu() - c0
        else:  # bare1 / bareN: the same elements as files for `nft -f`
            ex.start(JAIL, now=now)
            out["seconds"], out["cpu"] = _bare(Path(tmp), n, now, 1 if kind == "bare1" else 0)
        if kind != "python" and sample and (verify or kind == "restore"):
            out.update(_check(n, sample))
        if kind != "python":
            subprocess.run(["nft", "delete", "table", "inet", "portsentinel"], check=False, timeout=600)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bans", type=int, default=1_000_000, help="rows in the store (1%% of them expired)")
    p.add_argument("--old-bans", type=int, default=0, help="rows for the per-ban (old) restore (0: skipped)")
    p.add_argument("--parts", default="python,restore,bareN,bare1", help="which parts, in this order")
    p.add_argument("--sample", type=int, default=1000,
                   help="addresses looked for in the listed set (0: the set is not listed)")
    p.add_argument("--verify-all", action="store_true",
                   help="list the set after every kernel part, not only after the restore (~1 min at 1,000,000)")
    p.add_argument("--inner", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.inner:
        print(json.dumps(inner(args.inner[0], int(args.inner[1]), args.sample, args.verify_all)))
        return 0
    problem = lab_problem()
    if problem:
        print(f"restore bench: {problem}", file=sys.stderr)
        return 2
    print(machine())
    print(time.strftime("%Y-%m-%d %H:%M:%S %Z"), "--bans", args.bans, flush=True)
    sweep_stale()
    parts = [(k, args.old_bans if k == "old" else args.bans) for k in args.parts.split(",")]
    if args.old_bans and "old" not in args.parts:
        parts.append(("old", args.old_bans))
    with Lab() as lab:
        for kind, n in parts:
            extra = ["--sample", str(args.sample)] + (["--verify-all"] if args.verify_all else [])
            res = lab.victim.run([PY, "-m", "bench.restore_bench", "--inner", kind, str(n), *extra], timeout=3600)
            r = json.loads(res.stdout.strip().splitlines()[-1])
            line = (f"  {kind:<8} {n:>9} rows  {r['seconds']:7.2f} s  cpu {r['cpu']:6.2f} s  "
                    f"{n / r['seconds']:9.0f} rows/s")
            if "sample_in" in r:
                line += f"  in set {r['sample_in']}, expired absent {r['expired_absent']}"
            if "held" in r:
                line += f", held {r['held']} of {n - n // 100}"
            print(line, flush=True)
            if "lift_seconds" in r:
                print(f"  {'lift':<8} {n // 100:>9} rows  {r['lift_seconds']:7.2f} s  cpu {r['lift_cpu']:6.2f} s  "
                      f"(the expired rows' unbans: one nft batch deleting them from the set of {n - n // 100})",
                      flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
