"""Latency from ``journal.send`` in one process to JournalSource returning the entry in another.

Side by side in one run, records interleaved so the machine's noise hits both alike:
  (a) poll: select() on the Reader's descriptor, then process() + read() — journald's coalesced notification.
  (b) wake: the writer also sends one empty datagram to the responder's wake socket (portsentinel.common.wake);
      the reader then process() + read() at once, retrying in 0.5 ms sleeps for up to 20 ms while the entry is
      not visible yet; the Reader's descriptor is watched too, as in the responder.

Run in the private journald (docs/testing.md), as root:
  unshare --mount --propagation private --fork -- bash scripts/with-journald.sh \\
      .venv/bin/python -m bench.journal_latency [--count 60]
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import select
import subprocess
import sys
import tempfile
import time
import uuid

from portsentinel.common.wake import WakeSocket
from portsentinel.responder.adapters.journal_source import JournalSource

WRITER = """
import sys, time
from systemd import journal
from portsentinel.common.wake import send_wake

ROOT = Path(__file__).resolve().parent.parent
tag, wake = sys.argv[1], sys.argv[2]
for line in sys.stdin:
    mode, seq = line.split()
    t0 = time.monotonic_ns()
    journal.send("bench record " + seq, PS_BENCH=tag, PS_SEQ=seq, PS_T0=str(t0))
    if mode == "b":
        send_wake(wake)
"""

RETRY_FOR = 0.020
RETRY_STEP = 0.0005  # as the responder's service.pump(settle=...)


class Stats:
    def __init__(self) -> None:
        self.ms: list[float] = []
        self.retries: list[int] = []
        self.by_fd = 0

    def line(self, label: str) -> str:
        xs = sorted(self.ms)
        if not xs:
            return f"{label:<34} no samples"

        def pct(p: float) -> float:
            return xs[min(len(xs) - 1, max(0, round(p / 100 * len(xs) + 0.5) - 1))]

        return (f"{label:<34} n={len(xs):3d}  median {pct(50):7.2f} ms  p90 {pct(90):7.2f} ms  "
                f"p99 {pct(99):7.2f} ms  max {xs[-1]:7.2f} ms  min {xs[0]:6.2f} ms")


def wait_for(src: JournalSource, wake: WakeSocket | None, seq: int, stats: Stats,
             step: float = RETRY_STEP) -> tuple[int, int]:
    """Block until entry ``seq`` is read; returns (PS_T0, time seen) in monotonic ns."""
    fds: list[JournalSource | WakeSocket] = [src] if wake is None else [src, wake]
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        ready = select.select(fds, [], [], max(0.0, deadline - time.monotonic()))[0]
        if not ready:
            break
        entries = []
        retries = 0
        if wake is not None and wake in ready:
            wake.drain()
            src.process()
            stop = time.monotonic() + RETRY_FOR
            while True:
                entries = src.read()
                if entries or time.monotonic() >= stop:
                    break
                retries += 1
                time.sleep(step)
        else:
            src.process()
            entries = src.read()
        seen = time.monotonic_ns()
        for e in entries:
            if int(e.fields["PS_SEQ"]) == seq:
                if wake is not None:
                    stats.retries.append(retries)
                    stats.by_fd += wake not in ready
                return int(e.fields["PS_T0"]), seen
    raise SystemExit(f"record {seq} not read within 5 s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=60, help="records per mode (default 60)")
    ap.add_argument("--retry-step", type=float, default=RETRY_STEP * 1e3,
                    help="sleep between retries after a wake-up, in ms (default %(default)s)")
    ap.add_argument("--max-gap", type=float, default=0.3, help="random pause between records, up to (s)")
    args = ap.parse_args()
    step = args.retry_step / 1e3
    if os.environ.get("PORTSENTINEL_PRIVATE_JOURNALD") != "1":
        raise SystemExit("run inside the private journald: see the module docstring")

    tag = uuid.uuid4().hex
    with tempfile.TemporaryDirectory(prefix="ps-bench-") as tmp:
        wake_path = os.path.join(tmp, "wake.sock")
        wake = WakeSocket(wake_path)
        src = JournalSource([{"PS_BENCH": tag}])
        env = dict(os.environ)
        writer = subprocess.Popen([sys.executable, "-c", WRITER, tag, wake_path], stdin=subprocess.PIPE,
                                  text=True, env=env)
        assert writer.stdin is not None
        poll, woken = Stats(), Stats()
        rng = random.Random(1)
        plan = [m for _ in range(args.count) for m in ("a", "b")]
        try:
            for seq, mode in enumerate(plan):
                writer.stdin.write(f"{mode} {seq}\n")
                writer.stdin.flush()
                stats = poll if mode == "a" else woken
                t0, seen = wait_for(src, wake if mode == "b" else None, seq, stats, step)
                stats.ms.append((seen - t0) / 1e6)
                time.sleep(rng.uniform(0.0, args.max_gap))
        finally:
            writer.stdin.close()
            writer.wait(10)
            src.close()
            wake.close()

    print(f"journal_latency: {platform.node()} {platform.machine()} {os.cpu_count()} CPUs, "
          f"{platform.system()} {platform.release()}, python {platform.python_version()}, "
          f"{time.strftime('%Y-%m-%d %H:%M:%S %z')}")
    print("time from journal.send (writer process) to JournalSource.read() returning it (reader process):")
    print(poll.line("(a) poll on the Reader's fd"))
    print(woken.line("(b) wake datagram + bounded retry"))
    needed = sum(1 for r in woken.retries if r)
    print(f"    (b): {needed}/{len(woken.retries)} needed a retry (max {max(woken.retries, default=0)} x "
          f"{step * 1e3:.1f} ms); {woken.by_fd} read through the Reader's fd before the wake-up")
    if poll.ms and woken.ms:
        ratio = sorted(poll.ms)[len(poll.ms) // 2] / max(1e-9, sorted(woken.ms)[len(woken.ms) // 2])
        print(f"    median ratio (a)/(b): {ratio:.0f}x")


if __name__ == "__main__":
    main()
