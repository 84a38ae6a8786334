#!/usr/bin/env python3
"""The responder's bulk path (issue 13 "Speed"): N bans arriving at once, side by side in one run.

Run as root inside a private journald (the records go to it):
    unshare --mount --propagation private --fork -- bash scripts/with-journald.sh \\
        .venv/bin/python -m bench.bulk_bench --bans 10000

Everything happens in a fresh namespace lab (tests/lab/netns.py); nft runs only in the victim namespace.
  responder   N scan records appended at once to the responder's JSON-lines source (file backend, one jail,
              action nftables): until the last address's probes stop being answered (all in force), and until
              the ban records are in the journal (aggregated: one entry per 256 bans)
  in-process  in the victim namespace, the same N bans through the executor (libnftables in-process):
              bulk      Executor.ban_many(all N)            one plan per ban, one nft transaction for all
              per-ban   Executor.ban_many([ban]), M times    one transaction per ban (the per-ban path; M =
                        --per-ban-n, 1,000 by default: each transaction costs more as the set grows)
              bare nft  NftBatch of the same N elements       one transaction, no plans: the floor
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
from typing import Any

from bench.responder_lab import (
    PY,
    addresses,
    jail,
    journal_records,
    machine,
    scan_record,
    serve,
    set_count,
    watch_begin,
    watch_end,
)
from tests.lab.netns import Lab, lab_problem, sweep_stale
from tests.lab.pipeline import ResponderProcess, make_config

ROOT = Path(__file__).resolve().parents[1]


def inner(n: int, per_ban_n: int) -> dict[str, Any]:
    """In the victim namespace: the executor's bulk and per-ban paths and a bare nft batch, same N elements."""
    from portsentinel.responder.actions.executor import Executor
    from portsentinel.responder.adapters.libnft import NftRunner
    from portsentinel.responder.adapters.nftbatch import NftBatch
    from portsentinel.responder.adapters.runner import SubprocessRunner
    from portsentinel.responder.config.jailconf import ActionRef, JailConfig
    from portsentinel.responder.core.bans import Ban

    out: dict[str, Any] = {"n": n, "per_ban_n": per_ban_n}
    now = time.time()

    def executor(name: str) -> Executor:
        ex = Executor(ROOT / "actions.d", lambda *a, **k: None)
        ex.configure(JailConfig(name=name, where="bench", actions=[ActionRef("nftables", {"name": name}, "bench")]))
        ex.start(name, now=now)
        return ex

    for kind, first in (("bulk", "10.64.0.1"), ("per_ban", "10.65.0.1"), ("bare", "10.66.0.1")):
        ips = addresses(first, per_ban_n if kind == "per_ban" else n)
        name = f"b{kind.replace('_', '')}"
        if kind == "bare":
            ex = executor(name)  # only for its set; the elements go in without plans
            nb = NftBatch(NftRunner(SubprocessRunner()))
            t0 = time.perf_counter()
            for ip in ips:
                nb.add(f"{name}_v4", ip, 3601)
            res = nb.commit()
            seconds = time.perf_counter() - t0
            ok = res.ok
        else:
            ex = executor(name)
            bans = [Ban(name, ip, now, now + 3600) for ip in ips]
            t0 = time.perf_counter()
            if kind == "bulk":
                applied = ex.ban_many(bans, now=now, restoring=True)
            else:
                applied = [a for b in bans for a in ex.ban_many([b], now=now, restoring=True)]
            seconds = time.perf_counter() - t0
            ok = all(names for _, names in applied)
        out[kind] = {"seconds": seconds, "ok": ok, "n": len(ips)}
    return out


def responder(lab: Lab, work: Path, n: int) -> dict[str, Any]:
    """The whole responder: N records written at once -> all in force, and the records in the journal."""
    base = work / "responder"
    base.mkdir()
    cfg = make_config(base, jail(base))
    alerts = base / "alerts.jsonl"
    alerts.touch()
    os.chmod(alerts, 0o640)
    ips = addresses("198.19.0.1", n)
    payload = "".join(json.dumps(scan_record(ip)) + "\n" for ip in ips).encode()
    out: dict[str, Any] = {"n": n}
    with ResponderProcess(lab.victim, base, cfg, backend="pyinotify") as resp:
        assert resp.proc is not None
        pid = resp.proc.pid
        serve(lab)
        watcher = watch_begin(lab, ips[-1], 120)
        fd = os.open(alerts, os.O_WRONLY | os.O_APPEND)
        t0 = time.time()
        os.write(fd, payload)
        os.close(fd)
        watched = watch_end(watcher)
        t_set = watched["first_blocked"]
        out["watch_gap"] = watched.get("max_send_gap")  # the watcher's own longest pause (a loaded machine)
        out["in_set"] = set_count(lab.victim, "scan_v4")
        deadline = time.monotonic() + 120
        recs: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            recs = journal_records("SYSLOG_IDENTIFIER=portsentinel-responder", "PS_EVENT=ban", f"_PID={pid}")
            srcs = {s for r in recs for s in (r["PS_SRC"] if isinstance(r.get("PS_SRC"), list)
                                                else [r.get("PS_SRC")]) if s}
            if len(srcs) >= n:
                break
            time.sleep(0.25)
        if t_set is None:  # diagnostics: what the kernel and the responder say then
            out["stderr"] = resp.stderr()[-3000:]
            out["sample"] = [{k: v for k, v in r.items() if k != "PS_SRC"} for r in recs[:1]]
            out["alive"] = resp.proc.poll() is None
            out["ruleset"] = lab.victim.run(["nft", "list", "tables"], check=False).stdout[-500:]
            listed = lab.victim.run(["nft", "list", "set", "inet", "portsentinel", "scan_v4"], check=False)
            out["list_rc"] = (listed.returncode, listed.stderr[-300:], len(listed.stdout))
            out["status"] = str(resp.ask("status"))[:1500]
        out.update(set_s=None if t_set is None else t_set - t0, entries=len(recs), addresses=len(srcs),
                   records_s=max((float(r["PS_TIME"]) for r in recs), default=t0) - t0)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bans", type=int, default=10_000)
    p.add_argument("--per-ban-n", type=int, default=1_000, help="bans through the per-ban path (in-process)")
    p.add_argument("--inner", type=int, help=argparse.SUPPRESS)  # the in-process part, in the victim namespace
    args = p.parse_args()
    if args.inner:
        print(json.dumps(inner(args.inner, args.per_ban_n)))
        return 0
    problem = lab_problem()
    if problem:
        print(f"bulk bench: {problem}", file=sys.stderr)
        return 2
    if not os.environ.get("PORTSENTINEL_PRIVATE_JOURNALD"):
        print("bulk bench: run it inside scripts/with-journald.sh (see the docstring)", file=sys.stderr)
        return 2
    n = args.bans
    print(machine())
    print(time.strftime("%Y-%m-%d %H:%M:%S %Z"), f"| {n} bans", flush=True)
    sweep_stale()
    with tempfile.TemporaryDirectory(prefix="ps-bulk-") as tmp, Lab() as lab:
        r = responder(lab, Path(tmp), n)
        res = lab.victim.run([PY, "-m", "bench.bulk_bench", "--inner", str(n), "--per-ban-n", str(args.per_ban_n)],
                             timeout=900)
        i = json.loads(res.stdout.strip().splitlines()[-1])
    print(f"\n== the responder: {n} scan records appended at once to its JSON-lines source")
    if r["set_s"]:
        print(f"  all in force after {r['set_s'] * 1000:9.1f} ms -> {n / r['set_s']:9.0f} bans/s  (set holds "
              f"{r['in_set']}; the watcher's longest pause {r['watch_gap'] * 1000:.0f} ms)")
    else:
        print(f"  the last address was never blocked (the set holds {r['in_set']}); responder alive "
              f"{r.get('alive')}: {r.get('stderr')}; tables: {r.get('ruleset')}; nft list set: {r.get('list_rc')}; "
              f"status: {r.get('status')}; a record: {r.get('sample')}; the watcher's longest pause "
              f"{r['watch_gap'] * 1000:.0f} ms")
    print(f"  ban records: {r['addresses']} addresses in {r['entries']} journal entries, the last after "
          f"{r['records_s'] * 1000:9.1f} ms")
    print("\n== in-process in the victim namespace, the same bans (libnftables)")
    for key, label in (("bulk", "executor, bulk path (one transaction)"),
                       ("per_ban", "executor, per-ban path (one transaction each)"),
                       ("bare", "bare nft batch of the same elements")):
        f = i[key]
        print(f"  {label:<48} {f['n']:6d} in {f['seconds'] * 1000:9.1f} ms -> {f['n'] / f['seconds']:9.0f} bans/s"
              + ("" if f["ok"] else "  (FAILED)"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
