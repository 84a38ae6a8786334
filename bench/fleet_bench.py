"""The fleet daemon's two figures, each side by side with the engine's own floor measured in the same run.

1. Latency: a shared decision appended to host A's decisions file (+ the responder's wake datagram) -> the remote
   ban's JSON line written on host E by E's daemon. Floor: a bare nats-py put -> the same client's KV watch
   receiving it (one process in host A: put and watch through the cluster).
2. Catch-up: a host joining a bucket holding ``--keys`` active bans (100,000) -> every one of them applied (its
   lines written; the daemon's CPU seconds by then). Floors: a bare nats-py ordered consumer (js.subscribe)
   receiving the same keys, and a bare nats-py subscription fed by one consumer request (the daemon's way).

A 3-server JetStream cluster and the hosts are network namespaces of the NATS lab (tests/lab/nats.py); nothing
leaves them. Run as root:
  unshare --mount --propagation private --fork -- bash scripts/with-journald.sh \\
      .venv/bin/python -m bench.fleet_bench [--count 200] [--keys 100000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path

from tests.lab import fleetd
from tests.lab.fleetd import Daemon, make_bucket
from tests.lab.nats import nats_lab

FLOOR_LATENCY = """
import asyncio, os, sys, time, json, nats
async def main():
    nc = await nats.connect(os.environ["PS_NATS_SERVERS"].split(","), connect_timeout=3)
    js = nc.jetstream(timeout=15)
    got = {}
    async def cb(msg):
        got[msg.subject] = time.monotonic()
    await js.subscribe("$KV.portsentinel_bans.floor.>", stream="KV_portsentinel_bans", cb=cb, ordered_consumer=True,
                       deliver_policy=nats.js.api.DeliverPolicy.NEW)
    out = []
    for i in range(int(sys.argv[1])):
        subject = f"$KV.portsentinel_bans.floor.j.198-18-{i // 256}-{i % 256}"
        t0 = time.monotonic()
        await js.publish(subject, b"{}")
        while subject not in got:
            await asyncio.sleep(0.0002)
        out.append((got[subject] - t0) * 1000)
        await asyncio.sleep(0.02)
    print(json.dumps(out))
    await nc.close()
asyncio.run(main())
"""

PUT_MANY = """
import asyncio, json, os, sys, time, nats
async def main():
    nc = await nats.connect(os.environ["PS_NATS_SERVERS"].split(","), connect_timeout=3)
    js = nc.jetstream(timeout=30)
    now = time.time()
    pending = []
    for i in range(int(sys.argv[1])):
        addr = f"100.{64 + i // 65536}.{(i // 256) % 256}.{i % 256}"
        value = {"v": 1, "addr": addr, "jail": "portsentinel", "until": now + 3600, "scan": "syn", "verified": 0,
                 "offence": 1, "at": now}
        pending.append(await js.publish_async("$KV.portsentinel_bans.x.portsentinel." + addr.replace(".", "-"),
                                              json.dumps(value, separators=(",", ":")).encode()))
        if len(pending) >= 2000:
            await asyncio.gather(*pending)
            pending = []
    await asyncio.gather(*pending)
    await nc.close()
asyncio.run(main())
"""

FLOOR_CATCHUP = """
import asyncio, os, sys, time, nats
async def main():
    nc = await nats.connect(os.environ["PS_NATS_SERVERS"].split(","), connect_timeout=3)
    js = nc.jetstream(timeout=30)
    want = int(sys.argv[1])
    seen = 0
    done = asyncio.Event()
    async def cb(msg):
        nonlocal seen
        seen += 1
        if seen >= want:
            done.set()
    t0, c0 = time.monotonic(), time.process_time()
    await js.subscribe("$KV.portsentinel_bans.x.>", stream="KV_portsentinel_bans", cb=cb, ordered_consumer=True,
                       deliver_policy=nats.js.api.DeliverPolicy.LAST_PER_SUBJECT)
    await asyncio.wait_for(done.wait(), 300)
    print(time.monotonic() - t0, time.process_time() - c0)
    await nc.close()
asyncio.run(main())
"""

# The floor of the daemon's own watch: a bare nats-py subscription and a consumer made by one API request (as
# portsentinel/fleet/consumer.py configures it), counting data messages, answering flow control at once.
FLOOR_RAW = """
import asyncio, json, os, sys, time, nats
async def main():
    nc = await nats.connect(os.environ["PS_NATS_SERVERS"].split(","), connect_timeout=3)
    want = int(sys.argv[1])
    seen = 0
    done = asyncio.Event()
    async def cb(msg):
        nonlocal seen
        if msg.reply.startswith("$JS.ACK."):
            seen += 1
            if seen >= want:
                done.set()
        elif msg.reply.startswith("$JS.FC."):
            await nc.publish(msg.reply, b"")
    t0, c0 = time.monotonic(), time.process_time()
    inbox = nc.new_inbox()
    await nc.subscribe(inbox, cb=cb)
    config = {"name": "floor_raw", "deliver_subject": inbox, "filter_subject": "$KV.portsentinel_bans.x.>",
              "ack_policy": "none", "max_deliver": 1, "replay_policy": "instant", "flow_control": True,
              "idle_heartbeat": 5_000_000_000, "inactive_threshold": 60_000_000_000, "mem_storage": True,
              "num_replicas": 1, "deliver_policy": "last_per_subject"}
    await nc.request("$JS.API.CONSUMER.CREATE.KV_portsentinel_bans.floor_raw",
                     json.dumps({"stream_name": "KV_portsentinel_bans", "config": config}).encode(), timeout=10)
    await asyncio.wait_for(done.wait(), 300)
    print(time.monotonic() - t0, time.process_time() - c0)
    await nc.request("$JS.API.CONSUMER.DELETE.KV_portsentinel_bans.floor_raw", b"", timeout=10)
    await nc.close()
asyncio.run(main())
"""


def profiled(work: Path) -> Path:
    """portsentinel-fleet under cProfile (the profile written to ``work``/fleet.prof when it stops)."""
    path = work / "fleet-profiled"
    path.write_text(f"#!{sys.executable}\nimport cProfile, sys\nfrom portsentinel.fleet.cli import main\n"
                    f"cProfile.run('main()', {str(work / 'fleet.prof')!r})\n")
    path.chmod(0o755)
    return path


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a running process (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_lines(path: Path, count: int, limit: float) -> float:
    """Monotonic time at which ``path`` holds ``count`` lines (polled every 5 ms)."""
    deadline = time.monotonic() + limit
    seen = 0
    offset = 0
    while time.monotonic() < deadline:
        try:
            with open(path, "rb") as fh:
                fh.seek(offset)
                chunk = fh.read()
        except FileNotFoundError:
            chunk = b""
        offset += len(chunk)
        seen += chunk.count(b"\n")
        if seen >= count:
            return time.monotonic()
        time.sleep(0.005)
    raise SystemExit(f"{path}: {seen} of {count} lines within {limit:.0f} s")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=200, help="decisions for the latency figure")
    ap.add_argument("--keys", type=int, default=100_000, help="active bans in the bucket for the catch-up")
    ap.add_argument("--profile", action="store_true", help="run the joining daemon under cProfile; its top functions")
    ap.add_argument("--no-latency", action="store_true", help="the catch-up only")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pslab-fleetbench-"))
    print(f"machine: {platform.node()} {platform.machine()} {os.cpu_count()} cpu; "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    with nats_lab(("a", "e", "j", "x"), servers=3) as lab:
        print(f"nats-server {lab.version}, 3 servers, R3")
        make_bucket(lab, "a")
        if not args.no_latency:
            a = Daemon(lab, "a", work).start()
            e = Daemon(lab, "e", work, origin_rate=100_000).start()
            time.sleep(1)
            daemon_ms: list[float] = []
            for i in range(args.count):
                addr = f"198.19.{i // 256}.{i % 256}"
                t0 = time.monotonic()
                a.decide("ban", addr)
                size = 0
                while True:  # E's output grows by this ban's line
                    st = e.output.stat().st_size if e.output.exists() else 0
                    if st != size:
                        size = st
                        if addr in e.output.read_text()[-400:]:
                            break
                    if time.monotonic() - t0 > 10:
                        raise SystemExit(f"{addr}: no line on E within 10 s")
                    time.sleep(0.0002)
                daemon_ms.append((time.monotonic() - t0) * 1000)
                time.sleep(0.02)
            floor_ms: list[float] = json.loads(lab.python("a", FLOOR_LATENCY, str(args.count), timeout=120).stdout)
            print(f"latency, decision on A -> line on E ({args.count}): median {statistics.median(daemon_ms):.1f} ms, "
                  f"p99 {pct(daemon_ms, 0.99):.1f} ms, max {max(daemon_ms):.1f} ms")
            print(f"  floor, bare nats-py put -> watch ({args.count}): median {statistics.median(floor_ms):.1f} ms, "
                  f"p99 {pct(floor_ms, 0.99):.1f} ms")
            a.stop()
            e.stop()
        t0 = time.monotonic()
        lab.python("x", PUT_MANY, str(args.keys), timeout=600)
        print(f"catch-up: {args.keys} keys put in {time.monotonic() - t0:.1f} s")
        floor_s, floor_cpu = map(float, lab.python("j", FLOOR_CATCHUP, str(args.keys), timeout=600).stdout.split())
        raw_s, raw_cpu = map(float, lab.python("j", FLOOR_RAW, str(args.keys), timeout=600).stdout.split())
        # The keys were put moments ago: live updates for the rate cap, which the bench lifts.
        if args.profile:
            fleetd.FLEET = str(profiled(work))
        j = Daemon(lab, "j", work, origin_max=args.keys * 2, origin_rate=args.keys * 2)
        t0 = time.monotonic()
        j.start()
        assert j.proc is not None
        last_line = wait_lines(j.output, args.keys, 300) - t0
        cpu = cpu_seconds(j.proc.pid)
        j.wait(lambda: j.status().get("bans_by_origin", {}).get("x", 0) >= args.keys and j.status()["lag"] == 0,
               300, "catch-up")
        print(f"catch-up, a joining daemon: {args.keys} bans, the last of its lines written {last_line:.2f} s after "
              f"its start (process start, imports, connect included); {cpu:.2f} CPU s by then")
        print(f"  floor, bare nats-py ordered consumer (js.subscribe): {floor_s:.2f} s, {floor_cpu:.2f} CPU s")
        print(f"  floor, bare nats-py subscription + one consumer request: {raw_s:.2f} s, {raw_cpu:.2f} CPU s")
        j.stop()
        if args.profile:
            pstats.Stats(str(work / "fleet.prof")).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
