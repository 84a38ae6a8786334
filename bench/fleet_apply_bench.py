"""The fleet daemon's catch-up work in one process, without NATS: ``--keys`` entries (valid IPv4 bans from one
origin, as the bucket delivers them to a joining host: messages with JetStream's acknowledgement subjects)
through the watch's drain (portsentinel/fleet/pushwatch.py), ``FleetService.on_entries`` and its batch flush
(applier, lines, output file with fdatasync, sqlite; the last commit waited for), beside a floor measured in the
same run: a bare loop that only parses each value with ``json.loads`` and splits its key. Files live in a
temporary directory; no network.

    .venv/bin/python -m bench.fleet_apply_bench [--keys 100000] [--rounds 3] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import platform
import pstats
import tempfile
import time
from pathlib import Path

from portsentinel.fleet.config import FleetConfig
from portsentinel.fleet.consumer import Entry
from portsentinel.fleet.pushwatch import PushWatch, Raw
from portsentinel.fleet.service import FleetService

PREFIX = "$KV.portsentinel_bans."
#: Entries per list handed over (the watch hands over what one read of the connection held: ~200 messages).
CHUNK = 200


def entries(count: int, now: float, age: float = 1000) -> list[Entry]:
    out = []
    for i in range(count):
        addr = f"100.{64 + i // 65536}.{(i // 256) % 256}.{i % 256}"
        value = {"v": 1, "addr": addr, "jail": "portsentinel", "until": round(now + 3600, 3), "scan": "syn",
                 "verified": 0, "offence": 1, "at": round(now, 3)}
        out.append(Entry("x.portsentinel." + addr.replace(".", "-"), "PUT",
                         json.dumps(value, separators=(",", ":")).encode(), i + 1, count - i - 1, now - age))
    return out


def messages(batch: list[Entry]) -> list[Raw]:
    """The entries as the client hands them to the watch: subject, JetStream acknowledgement subject, data."""
    return [(PREFIX + e.key, f"$JS.ACK.KV_portsentinel_bans.ps_watch_j.1.{e.seq}.{e.seq}.{int(e.stamp * 1e9)}."
             f"{e.pending}", e.value, None) for e in batch]


def floor(batch: list[Entry]) -> float:
    t0 = time.perf_counter()
    for entry in batch:
        entry.key.split(".")
        json.loads(entry.value)
    return time.perf_counter() - t0


def daemon(msgs: list[Raw], work: Path, profile: Path | None) -> tuple[float, float, int]:
    work.mkdir()
    (work / "decisions.jsonl").touch()
    cfg = FleetConfig(host="j", state=str(work / "state.sqlite3"), output=str(work / "remote.jsonl"),
                      responder_wake="", wake=str(work / "wake"), status=str(work / "status.json"),
                      decisions=str(work / "decisions.jsonl"), origin_max=len(msgs) * 2, origin_rate=len(msgs) * 2)

    async def run() -> tuple[float, float]:
        svc = FleetService(cfg)
        watch = PushWatch(None, None, stream="KV_portsentinel_bans", prefix=PREFIX,  # type: ignore[arg-type]
                          name="ps_watch_j", heartbeat=5, on_entries=svc.on_entries)
        t0, c0 = time.perf_counter(), time.process_time()
        for i in range(0, len(msgs), CHUNK):  # as the watch drains them: what one read of the connection held
            watch.take(msgs[i:i + CHUNK])
            await asyncio.sleep(0)
        await asyncio.sleep(0)  # the caught-up flush
        svc.flush_applied()
        await svc.durable.wait()  # the last fdatasync and sqlite commit
        took, cpu = time.perf_counter() - t0, time.process_time() - c0
        svc.close()
        return took, cpu

    if profile is None:
        took, cpu = asyncio.run(run())
    else:
        prof = cProfile.Profile()
        took, cpu = prof.runcall(asyncio.run, run())
        prof.dump_stats(profile)
    with open(cfg.output, "rb") as fh:
        lines = sum(1 for _ in fh)
    return took, cpu, lines


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--keys", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--profile", action="store_true", help="one more round under cProfile; its top functions")
    ap.add_argument("--live", action="store_true", help="entries stored just now (the rate cap's path), not 1000 s ago")
    args = ap.parse_args()
    print(f"machine: {platform.node()} {platform.machine()} {os.cpu_count()} cpu, load {os.getloadavg()[0]:.1f}; "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    batch = entries(args.keys, time.time(), 1.0 if args.live else 1000.0)
    msgs = messages(batch)
    with tempfile.TemporaryDirectory(prefix="fleet-apply-") as tmp:
        for r in range(args.rounds):
            took, cpu, lines = daemon(msgs, Path(tmp) / f"r{r}", None)
            base = floor(batch)
            print(f"round {r + 1}: {args.keys} entries applied ({lines} lines) in {took:.2f} s, {cpu:.2f} CPU s "
                  f"({took / args.keys * 1e6:.1f} us, {cpu / args.keys * 1e6:.1f} CPU us each); floor json.loads + "
                  f"key split {base:.2f} s ({base / args.keys * 1e6:.1f} us each)")
        if args.profile:
            path = Path(tmp) / "profile"
            took, _, _ = daemon(msgs, Path(tmp) / "prof", path)
            print(f"under cProfile: {took:.2f} s")
            pstats.Stats(str(path)).sort_stats("tottime").print_stats(15)


if __name__ == "__main__":
    main()
