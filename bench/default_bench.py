"""Answered probes to fast scanners: the shipped default configuration against the previous default, in one run.

Both run in one lab (design.md §5) on the same victim, one after the other, each as `portsentinel run` runs it:
the detector on its embedded defaults, the responder on the project's jail.conf, filter.d and actions.d (only
paths differ: the test directory holds the JSON-lines file, the wake socket and the state).

  previous   what `portsentinel run` shipped before issue 9 §4/§5: the [portsentinel] jail with the nftables
             action only, sources counted and banned per address (jail.local: action = nftables, ban_prefix_v6 =
             128; detector: ipv6_prefix = 128)
  default    the shipped configuration: nftables plus the kernel trap on TCP 1-1024, IPv6 sources per /64

For each: ``--runs`` nmap scans per kind and family, each from a fresh source address (``-sS -p1-1024 -T5`` and
``-sS --top-ports 1000 -T5``, both with ``--max-retries 1 --min-rate 2000`` so a dropped scan ends in seconds),
and one IPv6 scanner rotating through 91 addresses of its own /64 (6 SYNs each, 4 ms apart: 546 probes). Answers
are counted on the victim's side: every SYN-ACK and RST it sends (tests/lab/counting.py). A real service listens
on port 80 (its SYN-ACK counts as an answer).

Run as root (the lab), every generator under ``timeout``:
  .venv/bin/python bench/default_bench.py [--runs 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.integration.test_default_lab import SERVICE  # noqa: E402
from tests.integration.test_prefix_lab import add_addresses, own_networks, rotate  # noqa: E402
from tests.lab.counting import answers, install_counters, tcp_answers  # noqa: E402
from tests.lab.detector import DetectorProcess, tool  # noqa: E402
from tests.lab.netns import Lab, lab_problem, sweep_stale  # noqa: E402
from tests.lab.pipeline import ResponderProcess  # noqa: E402

SCANS = [["-sS", "-p1-1024", "-T5"], ["-sS", "--top-ports", "1000", "-T5"]]
PREVIOUS_JAIL = "ban_prefix_v6 = 128\n[portsentinel]\naction = nftables[name=%(__name__)s]\n"  # after [DEFAULT]


@contextmanager
def shipped(lab: Lab, base: Path, kind: str) -> Iterator[ResponderProcess]:
    base.mkdir()
    base.chmod(0o755)
    cfg = base / "etc"
    cfg.mkdir()
    shutil.copy(ROOT / "jail.conf", cfg / "jail.conf")
    shutil.copytree(ROOT / "filter.d", cfg / "filter.d")
    shutil.copytree(ROOT / "actions.d", cfg / "actions.d")
    local = f"[DEFAULT]\nlogpath = {base}/alerts.jsonl\n"
    extra = ["--wake", str(base / "wake.sock")]
    if kind == "previous":
        local += PREVIOUS_JAIL
        det = base / "detector.conf"
        det.write_text((ROOT / "detector.conf").read_text().replace("ipv6_prefix = 64", "ipv6_prefix = 128"))
        extra += ["--config", str(det)]
    (cfg / "jail.local").write_text(local)
    with DetectorProcess(lab.victim, base / "alerts.jsonl", output="jsonl", extra=extra), \
            ResponderProcess(lab.victim, base, cfg) as resp:
        yield resp


def scan(lab: Lab, args: list[str], target: str, src: str) -> int:
    answers(lab.victim, reset=True)
    argv = ["timeout", "100", "nmap", "-n", "-Pn", "--max-retries", "1", "--min-rate", "2000", *args, "-S", src, "-e",
            lab.attacker.iface, *(["-6"] if ":" in target else []), target]
    proc = lab.attacker.run(argv, check=False, timeout=110)
    if proc.returncode != 0:
        raise RuntimeError(f"nmap failed: {proc.stderr[-500:]}")
    return tcp_answers(lab.victim)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=2, help="nmap runs per scan kind, family and configuration")
    a = p.parse_args()
    problem = lab_problem()
    if problem:
        raise SystemExit(problem)
    print(f"# {platform.node()} {platform.platform()} nproc={os.cpu_count()} "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    sweep_stale()
    rows: list[tuple[str, str, str, list[int]]] = []
    with Lab() as lab, tempfile.TemporaryDirectory(prefix="defaultbench-") as tmp:
        work = Path(tmp)
        work.chmod(0o755)
        install_counters(lab.victim)
        own_networks(lab, "2001:db8:beef::/48")
        srv = lab.victim.popen([tool("python"), "-c", SERVICE], stdout=subprocess.PIPE)
        assert srv.stdout is not None and srv.stdout.readline().strip() == b"ready"
        for n, kind in enumerate(("previous", "default")):
            with shipped(lab, work / kind, kind) as resp:
                for family in ("ipv4", "ipv6"):
                    target = lab.victim.addr4 if family == "ipv4" else lab.victim.addr6
                    for args in SCANS:
                        got = []
                        for a4, a6 in lab.aliases(lab.attacker, a.runs):
                            got.append(scan(lab, args, target, a4 if family == "ipv4" else a6))
                        rows.append((kind, family, " ".join(args), got))
                sources = [f"2001:db8:beef:{n + 1}::{0x100 + i:x}" for i in range(91)]
                add_addresses(lab.attacker, sources)
                answers(lab.victim, reset=True)
                rotate(lab, sources)
                rotating = tcp_answers(lab.victim)
                time.sleep(1.0)
                bans = [r for r in resp.records() if r.get("PS_EVENT") == "ban" and r.get("PS_ACTION") != "kernel-trap"
                        and (r.get("PS_SRC") in sources)]
                refused = resp.ask("status")["jails"]["portsentinel"]["cap_refused"]
                rows.append((kind, "ipv6", "rotating /64: 91 addresses x 6 SYNs",
                             [rotating]))
                rows.append((kind, "ipv6", "  its bans, refused by the cap", [len(bans), refused]))
                assert resp.stop() == 0
    print(f"\n{'configuration':<14}{'family':<8}{'scan':<42}{'answered (each run)'}")
    for kind, family, name, vals in rows:
        print(f"{kind:<14}{family:<8}{name:<42}{', '.join(str(v) for v in vals)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
