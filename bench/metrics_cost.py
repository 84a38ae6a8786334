#!/usr/bin/env python3
"""What the metrics cost (docs/metrics.md, docs/performance.md), measured without a network, side by side:

- the detector's hot path (``Pipeline.on_ring`` over a ring of SYNs, bench/hotpath.py's harness) and the one
  thing metrics add to it whether on or off: a probe counted by its TCP flags byte (``kinds[flags] += 1``);
- one exposition (collect + text format, what a scrape or a textfile write costs) of each daemon, the detector's
  after the ring was read, the responder's with ``--bans`` bans in force over ten jails; as a share of one core
  at a scrape every second (the lab tests' interval; Prometheus' default is a minute, 15 s is common).

  .venv/bin/python -m bench.metrics_cost [--rounds 7] [--bans 10000]

Best of ``--rounds`` for each figure (a loaded machine only ever adds time). A benchmark: it prints figures.
"""

from __future__ import annotations

import argparse
import inspect
import platform
import re
import sys
import textwrap
import time
import timeit
import types

from prometheus_client import CollectorRegistry, generate_latest

from bench.hotpath import make_detector, make_ring, per_packet
from portsentinel.detector import pipeline
from portsentinel.detector.metrics import DetectorCollector
from portsentinel.detector.service import Detector
from portsentinel.responder.core.bans import FOREVER, Ban, BanBook
from portsentinel.responder.core.engine import Engine
from portsentinel.responder.core.forgery import ForgeryTally
from portsentinel.responder.core.guard import NeverBan
from portsentinel.responder.metrics import ResponderMetrics
from tests.lab.machine import cpu_model


class _NoOffences:
    def offences(self, jail: str, ip: str) -> int:
        return 0


class _Responder:
    """What ResponderMetrics reads of a responder: its engine, book, forgery tally and errors."""

    def __init__(self, bans: int) -> None:
        self.book = BanBook()
        for i in range(bans):
            self.book.add(Ban(f"jail{i % 10}", f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", 0.0, FOREVER))
        self.engine = Engine([], NeverBan(), self.book, _NoOffences())
        self.forgeries = ForgeryTally()
        self.errors: list[str] = []


def best(fn: object, rounds: int, number: int) -> float:
    """Best seconds per call of ``fn`` over ``rounds`` timings of ``number`` calls."""
    return min(timeit.repeat(fn, repeat=rounds, number=number)) / number  # type: ignore[arg-type]


def lean_detector() -> Detector:
    """The same detector whose on_ring lacks the probe tally (its source with that one line removed), for an
    A/B of the exact hot path in one process."""
    src = textwrap.dedent(inspect.getsource(pipeline.Pipeline.on_ring))
    lean = re.sub(r"\n[ ]*kinds_n\[flags\] \+= 1(?=\n)", "", src)
    if lean.count("\n") != src.count("\n") - 1:
        raise SystemExit("bench: the tally line is not in Pipeline.on_ring any more")
    space: dict[str, object] = {}
    exec(compile(lean, pipeline.__file__, "exec"), vars(pipeline), space)  # noqa: S102 - the project's own source
    det = make_detector()
    det.pipe.on_ring = types.MethodType(space["on_ring"], det.pipe)  # type: ignore[method-assign, arg-type]
    return det


def tally_ns(rounds: int) -> float:
    """ns per probe that ``kinds[flags] += 1`` adds: a loop with it, less the same loop without."""
    flags = [2] * 100_000
    kinds = [0] * 257

    def with_tally() -> None:
        k = kinds
        for f in flags:
            k[f] += 1

    def without() -> None:
        for _f in flags:
            pass

    return max(0.0, best(with_tally, rounds, 5) - best(without, rounds, 5)) / len(flags) * 1e9


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--bans", type=int, default=10_000, help="bans in force for the responder's exposition")
    args = ap.parse_args()
    print(f"machine: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {cpu_model()}; "
          f"python {platform.python_version()}")
    print(f"command: {' '.join([sys.executable, *sys.argv])}")

    det, lean = make_detector(), lean_detector()
    cap = make_ring()
    ring_ns = lean_ns = float("inf")
    for _ in range(args.rounds):  # interleaved: both see the same machine
        ring_ns = min(ring_ns, per_packet(None, cap, 1, batch=det.pipe.on_ring))
        lean_ns = min(lean_ns, per_packet(None, cap, 1, batch=lean.pipe.on_ring))
    add_ns = tally_ns(args.rounds)
    dreg = CollectorRegistry(auto_describe=False)
    dreg.register(DetectorCollector(det))
    det_s = best(lambda: generate_latest(dreg), args.rounds, 50)
    det_bytes = len(generate_latest(dreg))

    rm = ResponderMetrics()
    rm.resp = _Responder(args.bans)  # type: ignore[assignment]
    for i in range(10):
        rm.on_record({"PS_EVENT": "ban", "PS_JAIL": f"jail{i}", "PS_SRC": "192.0.2.1", "PS_ACTION": "nftables"})
    rreg = CollectorRegistry(auto_describe=False)
    rreg.register(rm)
    resp_s = best(lambda: generate_latest(rreg), args.rounds, 10)
    resp_bytes = len(generate_latest(rreg))

    print()
    print(f"{'figure':<58} {'value':>12}")
    print("-" * 71)
    print(f"{'detector hot path, Pipeline.on_ring per packet':<58} {ring_ns:9.0f} ns")
    print(f"{'  the same without the probe tally line (A/B, one process)':<58} {lean_ns:9.0f} ns "
          f"(tally: {100 * (ring_ns - lean_ns) / lean_ns:+.2f} %)")
    print(f"{'  the tally alone in a loop (kinds[flags] += 1)':<58} {add_ns:9.1f} ns "
          f"({100 * add_ns / ring_ns:.2f} % of the hot path)")
    print(f"{'detector exposition (collect + format), ' + str(det_bytes) + ' bytes':<58} "
          f"{det_s * 1e3:9.3f} ms ({100 * det_s:.3f} % of a core at 1 scrape/s)")
    print(f"{'responder exposition, ' + f'{args.bans:,} bans in force, ' + str(resp_bytes) + ' bytes':<58} "
          f"{resp_s * 1e3:9.3f} ms ({100 * resp_s:.3f} % of a core at 1 scrape/s)")
    print("\nA textfile write is one exposition plus a write and a rename; with both the endpoint (1 scrape/s) and "
          "the textfile (every second) on, a daemon does two per second.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
