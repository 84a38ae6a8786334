"""Kernel trap vs. user-space pipeline vs. nothing: ports a scanner gets answered, and first probe → block.

Side by side in one run, in one lab (docs/performance.md), each protection in turn on the same victim:

  none            no rules at all
  pipeline-file   detector (stcp, JSON lines + wake socket) → responder (file backend) → nftables set
  pipeline-journal  the same through journald (only inside scripts/with-journald.sh)
  trap-list       the responder's kernel trap, PortSentry's port lists (kernel-trap[shape=list])
  trap-advanced   the kernel trap, every port 1–1024 without a listener but 113 and 139 (shipped defaults)

For each: ``--scans`` nmap runs from fresh source addresses (``-sS -p1-1024 -T5 --min-rate 2000``, and
``--top-ports 1000 -T4``), the ports nmap saw answered (open, closed or unfiltered: anything but filtered,
from its XML report); and ``--probes`` runs of bench/responder_probe.py (SYNs to a listening port every 0.5 ms,
one SYN to port 1, probes until they stop being answered): the time from that first scan probe to the first
probe that is no longer answered (≤ 0: the probe right after the scan SYN was already refused).

Run as root (the lab), every generator under ``timeout``:
  unshare --mount --propagation private --fork -- bash scripts/with-journald.sh \\
      .venv/bin/python -m bench.trap_bench [--scans 3] [--probes 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from tests.lab.detector import VENV_BIN
from tests.lab.netns import Lab, lab_problem, sweep_stale
from tests.lab.pipeline import ResponderProcess, detector_for, make_config

ROOT = Path(__file__).resolve().parents[1]

PY = str(VENV_BIN / "python")
OPEN_PORT = 8080
SERVER = ("import socket\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
          f"s.bind(('0.0.0.0',{OPEN_PORT}))\ns.listen(4096)\nprint('ready',flush=True)\n"
          "while True:\n c,_=s.accept(); c.close()\n")
SCANS = [["-sS", "-p1-1024", "-T5", "--min-rate", "2000"], ["-sS", "--top-ports", "1000", "-T4", "--min-rate", "2000"]]


def jail_conf(base: Path, action: str, maxretry: int = 1) -> str:
    return (f"[DEFAULT]\nlogpath = {base}/alerts.jsonl\nbantime = 3600\nbantime.increment = false\n"
            f"maxbans_per_minute = 0\n[portsentinel]\nenabled = true\nfilter = portsentinel\nmaxretry = {maxretry}\n"
            f"action = {action}\n")


def answered(xml_text: str) -> int:
    """Ports nmap saw answered (any state but filtered / open|filtered), from its XML report."""
    root = ET.fromstring(xml_text)
    n = 0
    for ep in root.iter("extraports"):
        if "filtered" not in (ep.get("state") or ""):
            n += int(ep.get("count") or 0)
    for port in root.iter("port"):
        st = port.find("state")
        if st is not None and "filtered" not in (st.get("state") or ""):
            n += 1
    return n


@contextmanager
def protection(lab: Lab, work: Path, kind: str) -> Iterator[None]:
    base = work / kind
    base.mkdir()
    base.chmod(0o755)
    with ExitStack() as stack:
        if kind.startswith("pipeline"):
            backend, output = ("pyinotify", "jsonl") if kind == "pipeline-file" else ("systemd", "journal")
            cfg = make_config(base, jail_conf(base, "nftables[name=scan]"))
            stack.enter_context(detector_for(lab.victim, base, "stcp", output=output))
            stack.enter_context(ResponderProcess(lab.victim, base, cfg, backend=backend))
        elif kind.startswith("trap"):
            shape = "list" if kind == "trap-list" else "advanced"
            cfg = make_config(base, jail_conf(base, f"kernel-trap[name=trap, shape={shape}]", maxretry=2))
            (base / "alerts.jsonl").touch(mode=0o640)
            stack.enter_context(ResponderProcess(lab.victim, base, cfg))
        yield


def run_scans(lab: Lab, sources: list[str]) -> list[tuple[str, int, float]]:
    out = []
    for args, src in zip(SCANS * len(sources), sources, strict=False):
        t0 = time.monotonic()
        proc = lab.attacker.run(["timeout", "120", "nmap", "-n", "-Pn", "--max-retries", "1", *args, "-S", src, "-e",
                                 lab.attacker.iface, "-oX", "-", lab.victim.addr4], check=False, timeout=140)
        if proc.returncode != 0:
            raise RuntimeError(f"nmap failed: {proc.stderr[-500:]}")
        out.append((" ".join(args[:3]), answered(proc.stdout), time.monotonic() - t0))
    return out


def run_probes(lab: Lab, sources: list[str]) -> list[float]:
    bound = int(len(sources) * 1.5 + 30)
    gen = lab.attacker.run(["timeout", str(bound), PY, str(ROOT / "bench" / "responder_probe.py"), "--victim",
                            lab.victim.addr4, "--open-port", str(OPEN_PORT), "--interval", "0.0005", "--window", "1.0",
                            *sources], check=False, timeout=bound + 20)
    if gen.returncode != 0:
        raise RuntimeError(f"probe failed: {gen.stderr[-1000:]}")
    return [float(json.loads(line)["gen_blocked_after"]) for line in gen.stdout.splitlines() if line.startswith("{")]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scans", type=int, default=2, help="nmap runs per scan kind and protection")
    p.add_argument("--probes", type=int, default=5, help="first-probe-to-block runs per protection")
    a = p.parse_args()
    problem = lab_problem()
    if problem:
        raise SystemExit(problem)
    journald = os.environ.get("PORTSENTINEL_PRIVATE_JOURNALD") == "1"
    kinds = ["none", "pipeline-file", *(["pipeline-journal"] if journald else []), "trap-list", "trap-advanced"]
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(f"# {platform.node()} {platform.platform()} nproc={os.cpu_count()} {when}")
    if not journald:
        print("# no private journald: pipeline-journal skipped (run inside scripts/with-journald.sh)")
    sweep_stale()
    results: dict[str, dict[str, Any]] = {}
    with Lab() as lab, tempfile.TemporaryDirectory(prefix="trapbench-") as tmp:
        work = Path(tmp)
        work.chmod(0o755)
        srv = lab.victim.popen([PY, "-c", SERVER], stdout=subprocess.PIPE)
        assert srv.stdout is not None and srv.stdout.readline().strip() == b"ready"
        per = a.scans * len(SCANS) + a.probes
        pool = [a4 for a4, _ in lab.aliases(lab.attacker, per * len(kinds))]
        for i, kind in enumerate(kinds):
            mine = pool[i * per:(i + 1) * per]
            with protection(lab, work, kind):
                scans = run_scans(lab, mine[:a.scans * len(SCANS)])
                probes = run_probes(lab, mine[a.scans * len(SCANS):])
            results[kind] = {"scans": scans, "probes": probes}
    print(f"\n{'protection':<18}{'scan':<22}{'answered ports (each run)':<28}{'scan s':>8}")
    for kind, r in results.items():
        by: dict[str, list[tuple[int, float]]] = {}
        for name, n, secs in r["scans"]:
            by.setdefault(name, []).append((n, secs))
        for name, vals in by.items():
            print(f"{kind:<18}{name:<22}{', '.join(str(n) for n, _ in vals):<28}"
                  f"{statistics.median(s for _, s in vals):>8.1f}")
    print(f"\n{'protection':<18}{'first probe -> block, ms (median, max; <=0: the next probe was refused)':<70}")
    for kind, r in results.items():
        v = r["probes"]
        blocked = [x for x in v if x < 0.9]  # a run that never blocked reports the whole window
        desc = (f"{statistics.median(v) * 1000:8.2f} {max(v) * 1000:8.2f}  ({len(blocked)}/{len(v)} blocked within "
                "the 1 s window)") if v else "-"
        print(f"{kind:<18}{desc}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
