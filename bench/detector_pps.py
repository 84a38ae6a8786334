#!/usr/bin/env python3
"""Detector throughput, drops, CPU and memory under floods, side by side with scapy's sniff (docs/performance.md).

Run as root (``bash bench/run-detector.sh``). Everything happens in a fresh namespace lab (tests/lab/netns.py):
generators run only in the attacker namespace and send only to the victim's address; every generator is
bounded by ``timeout`` and by a packet count. Prints a table; it is a benchmark, not a test.

Parts (``--parts``, default all):
  flood    SYN flood to monitored closed ports, as fast as trafgen (and hping3 --flood) can send,
           and paced at ``--rate`` pps: packets/s processed, kernel drops, CPU, peak RSS.
  scapy    the same unpaced trafgen flood counted by scapy's sniff(filter=…, store=False, prn=…).
  nmap     nmap -sS -p- -T5 --min-rate 50000: drops and records.
  sources  ``--sources`` distinct spoofed sources (one SYN each): RSS over time.

``--metrics``: each flood run again with metrics on (``metrics_listen`` and a ``metrics_textfile`` written every
second, and /metrics scraped every second from the victim namespace during the flood), side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from portsentinel.detector.bpf import filter_expression
from tests.lab.detector import VENV_BIN, DetectorProcess
from tests.lab.machine import cpu_model
from tests.lab.netns import Host, Lab, lab_problem, sweep_stale

ROOT = Path(__file__).resolve().parents[1]

CLK_TCK = os.sysconf("SC_CLK_TCK")
NCPU = os.cpu_count() or 1
# Generator on CPU 0 (the veth receive path, the victim's kernel work, runs there too), the program being
# measured on CPU 1: a fair, repeatable split on a two-core machine.
GEN_CPU, DET_CPU = "0", ("1" if NCPU > 1 else "0")

DETECTOR_CONF = """\
[detector]
modes = atcp{more}
interface = {iface}
output = jsonl
jsonl_path = {jsonl}
advanced_tcp = 65535
advanced_exclude_tcp =
"""
METRICS_CONF = """\
metrics_listen = 127.0.0.1:9781
metrics_textfile = {textfile}
metrics_interval = 1
"""
#: A Prometheus-like scraper in the victim namespace: GET /metrics once a second (bounded by timeout).
SCRAPER = ("import time,urllib.request\nn=0\nwhile True:\n try: urllib.request.urlopen("
           "'http://127.0.0.1:9781/metrics',timeout=2).read(); n+=1\n except OSError: pass\n time.sleep(1)\n")


# ----------------------------------------------------------------------------- process and link facts

def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def mem_kb(pid: int) -> dict[str, int]:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    return out


def link_packets(host: Host, iface: str, direction: str) -> int:
    stats = json.loads(host.run(["ip", "-s", "-j", "link", "show", "dev", iface]).stdout)[0]["stats64"]
    return int(stats[direction]["packets"])


def mac(host: Host) -> str:
    return str(json.loads(host.run(["ip", "-j", "link", "show", "dev", host.iface]).stdout)[0]["address"])


def wait_idle(pid: int, limit: float = 15.0) -> float:
    """Wait until the process stops using CPU (it has drained its ring); returns the seconds waited."""
    start = time.monotonic()
    last = cpu_seconds(pid)
    while time.monotonic() - start < limit:
        time.sleep(0.25)
        now = cpu_seconds(pid)
        if now - last < 0.02:
            break
        last = now
    return time.monotonic() - start


def detail(records: list[dict[str, Any]]) -> dict[str, int]:
    stops = [r for r in records if r.get("PS_EVENT") == "stop"]
    if not stops:
        return {}
    out = {}
    for item in stops[-1].get("PS_DETAIL", "").split():
        key, _, value = item.partition("=")
        if value.isdigit():
            out[key] = int(value)
    return out


# ----------------------------------------------------------------------------- generators

def trafgen_conf(lab: Lab, path: Path, *, spoof: bool = False) -> Path:
    """SYNs from the attacker to ports 1-1024 of the victim; with ``spoof``, one new source per packet
    (10.0.0.0/8 counting up: outside the lab's subnet, so the victim's RSTs have no route and go nowhere)."""
    src = "dinc(167772161, 184549374)" if spoof else lab.attacker.addr4
    path.write_text(textwrap.dedent(f"""\
        {{
          eth(da={mac(lab.victim)}, sa={mac(lab.attacker)}, type=0x0800),
          ipv4(sa={src}, da={lab.victim.addr4}, ttl=64),
          tcp(sp=dinc(1025, 60000), dp=dinc(1, 1024), syn, win=1024)
        }}
        """))
    return path


FRAME_BYTES = 54  # Ethernet + IPv4 + TCP, no options: what tbf counts per packet


def trafgen(lab: Lab, conf: Path, count: int, rate: int | None = None) -> list[str]:
    """trafgen from the attacker. With ``rate``, through the qdisc (see :func:`pace`); trafgen's own -b
    pacing is bursty (measured: up to 6,600 packets in 10 ms at a nominal 50,000 pps), tbf's is not."""
    argv = ["taskset", "-c", GEN_CPU, "trafgen", "-o", lab.attacker.iface, "-c", str(conf), "-P", "1",
            "-n", str(count), "--no-sock-mem", "-Q", "-C"]
    if rate:
        argv += ["-q", "-b", f"{int(rate * 1.1)}pps"]
    return argv


def pace(lab: Lab, rate: int | None) -> None:
    """A token bucket on the attacker's interface (its own namespace): smooth pacing at ``rate`` pps of
    FRAME_BYTES-byte frames; None removes it."""
    a = lab.attacker
    if rate is None:
        a.run(["tc", "qdisc", "del", "dev", a.iface, "root"], check=False)
        return
    bits = int(rate * FRAME_BYTES * 8 * 1.06)  # calibrated: tbf lets ~6 % less through than its nominal rate
    a.run(["tc", "qdisc", "replace", "dev", a.iface, "root", "tbf", "rate", f"{bits}bit", "burst", "5400",
           "latency", "2ms"])


def hping3(lab: Lab) -> list[str]:
    # --flood ignores -c: the `timeout` around it is the bound. -p ++1: destination port counts up from 1.
    return ["taskset", "-c", GEN_CPU, "hping3", "--flood", "-q", "-n", "-S", "-p", "++1", "-w", "1024",
            lab.victim.addr4]


# ----------------------------------------------------------------------------- runs

@dataclass
class Row:
    name: str
    generator: str
    seconds: float = 0.0
    offered: int = 0
    seen: int = 0  # packets the program counted
    drops: int | None = None
    cpu: float = 0.0
    hwm_kb: int = 0
    lag: float = 0.0
    records: int | None = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def offered_pps(self) -> float:
        return self.offered / self.seconds if self.seconds else 0.0

    @property
    def seen_pps(self) -> float:
        return self.seen / self.seconds if self.seconds else 0.0


class Bench:
    def __init__(self, lab: Lab, work: Path, seconds: float) -> None:
        self.lab = lab
        self.work = work
        self.seconds = seconds
        self.n = 0

    def detector(self, more_modes: str = "", metrics: bool = False) -> DetectorProcess:
        self.n += 1
        jsonl = self.work / f"run{self.n}.jsonl"
        conf = self.work / f"run{self.n}.conf"
        more = f", {more_modes}" if more_modes else ""
        conf.write_text(DETECTOR_CONF.format(iface=self.lab.victim.iface, jsonl=jsonl, more=more)
                        + (METRICS_CONF.format(textfile=self.work / f"run{self.n}.prom") if metrics else ""))
        det = DetectorProcess(self.lab.victim, jsonl, config=conf)
        det.argv = ["taskset", "-c", DET_CPU, *det.argv]  # exec'd: the PID stays the detector's
        return det

    def offered(self) -> int:
        return link_packets(self.lab.attacker, self.lab.attacker.iface, "tx")

    def detector_run(self, name: str, gen_name: str, argv: list[str], seconds: float,
                     rate: int | None = None, more_modes: str = "", metrics: bool = False) -> Row:
        pace(self.lab, rate)
        det = self.detector(more_modes, metrics).start()
        assert det.proc is not None
        pid = det.proc.pid
        if metrics:
            self.lab.victim.popen(["timeout", str(int(seconds + 30)), "taskset", "-c", GEN_CPU,
                                   str(VENV_BIN / "python"), "-c", SCRAPER])
        try:
            time.sleep(0.5)
            cpu0, tx0 = cpu_seconds(pid), self.offered()
            t0 = time.monotonic()
            self.lab.attacker.run(["timeout", str(seconds), *argv], check=False, timeout=seconds + 30)
            elapsed = time.monotonic() - t0
            tx1 = self.offered()
            lag = wait_idle(pid)
            cpu1, mem = cpu_seconds(pid), mem_kb(pid)
            time.sleep(1.2)  # one more tick: the kernel's drop counter is read once a second
        finally:
            det.stop()
            pace(self.lab, None)
            if metrics:
                self.lab.victim.stop_all()  # the scraper (the detector has stopped already)
        recs = det.records()
        d = detail(recs)
        src = self.lab.attacker.addr4
        return Row(name, gen_name, elapsed, tx1 - tx0, d.get("packets", 0), d.get("drops"), cpu1 - cpu0,
                   mem.get("VmHWM", 0), lag,
                   len([r for r in recs if r.get("PS_EVENT") in ("scan", "summary") and r.get("PS_SRC") == src]),
                   extra=d)

    def scapy_run(self, argv: list[str], seconds: float, rate: int | None = None) -> Row:
        pace(self.lab, rate)
        expr = filter_expression(range(1, 65536), [])
        code = textwrap.dedent(f"""\
            import json, resource, sys
            from scapy.sendrecv import sniff
            n = 0
            base = []
            def count(_pkt):
                global n
                n += 1
            def started():
                ru = resource.getrusage(resource.RUSAGE_SELF)
                base.append(ru.ru_utime + ru.ru_stime)
                print("ready", flush=True)
            sniff(iface={self.lab.victim.iface!r}, filter={expr!r}, store=False, prn=count,
                  timeout={seconds + 8}, started_callback=started)
            ru = resource.getrusage(resource.RUSAGE_SELF)
            print(json.dumps({{"count": n, "cpu": ru.ru_utime + ru.ru_stime - base[0], "hwm_kb": ru.ru_maxrss}}))
            """)
        py = str(VENV_BIN / "python")
        proc = self.lab.victim.popen(["timeout", str(int(seconds) + 30), "taskset", "-c", DET_CPU, py, "-c", code],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        if not line.startswith("ready"):
            raise RuntimeError(f"scapy sniff did not start: {line} {proc.stderr.read().decode()[-2000:]}")
        tx0 = self.offered()
        t0 = time.monotonic()
        self.lab.attacker.run(["timeout", str(seconds), *argv], check=False, timeout=seconds + 30)
        elapsed = time.monotonic() - t0
        tx1 = self.offered()
        pace(self.lab, None)
        out, err = proc.communicate(timeout=seconds + 40)
        try:
            res = json.loads(out.decode().strip().splitlines()[-1])
        except (IndexError, ValueError) as exc:
            raise RuntimeError(f"scapy sniff failed: {err.decode()[-2000:]}") from exc
        return Row("scapy sniff (baseline)", "trafgen", elapsed, tx1 - tx0, res["count"], None, res["cpu"],
                   res["hwm_kb"], note="counted in prn; drops not reported by scapy")

    def nmap_run(self) -> Row:
        argv = ["nmap", "-n", "-Pn", "-sS", "-p-", "-T5", "--min-rate", "50000", "--max-retries", "1",
                self.lab.victim.addr4]
        row = self.detector_run("nmap -sS -p- -T5 --min-rate 50000", "nmap", ["taskset", "-c", GEN_CPU, *argv],
                                180)
        return row

    def sources_run(self, total: int, rate: int) -> Row:
        conf = trafgen_conf(self.lab, self.work / "spoof.cfg", spoof=True)
        det = self.detector().start()
        assert det.proc is not None
        pid = det.proc.pid
        marks = sorted({m for m in (100_000, 250_000, 500_000, 1_000_000, 2_000_000) if m < total} | {total})
        samples: list[tuple[int, int, int]] = []  # (sent, VmRSS kB, VmHWM kB)
        timeline: list[tuple[float, int]] = []
        try:
            time.sleep(0.5)
            cpu0, tx0 = cpu_seconds(pid), self.offered()
            limit = int(total / rate * 2) + 30
            gen = self.lab.attacker.popen(["timeout", str(limit), *trafgen(self.lab, conf, total, rate)],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            t0 = time.monotonic()
            while gen.poll() is None and time.monotonic() - t0 < limit + 5:
                sent = self.offered() - tx0
                mem = mem_kb(pid)
                timeline.append((time.monotonic() - t0, mem["VmRSS"]))
                while marks and sent >= marks[0]:
                    samples.append((marks.pop(0), mem["VmRSS"], mem["VmHWM"]))
                time.sleep(0.1)
            elapsed = time.monotonic() - t0
            sent = self.offered() - tx0
            lag = wait_idle(pid, limit=60)
            mem = mem_kb(pid)
            samples.append((sent, mem["VmRSS"], mem["VmHWM"]))  # after the detector drained its ring
            cpu1 = cpu_seconds(pid)
            time.sleep(1.2)
        finally:
            det.stop()
        d = detail(det.records())
        row = Row(f"{total:,} spoofed sources @ {rate:,} pps", "trafgen", elapsed, sent, d.get("packets", 0),
                  d.get("drops"), cpu1 - cpu0, mem["VmHWM"], lag,
                  len([r for r in det.records() if r.get("PS_EVENT") in ("scan", "summary")]), extra=d)
        row.extra["samples"] = samples
        row.extra["timeline"] = timeline
        return row


# ----------------------------------------------------------------------------- report

def machine() -> str:
    model = cpu_model()
    return (f"{time.strftime('%Y-%m-%d %H:%M %Z')}; nproc {NCPU}; {model}; kernel {platform.release()}; "
            f"python {platform.python_version()}")


def table(rows: list[Row]) -> str:
    head = (f"{'run':<40} {'gen':<8} {'secs':>5} {'offered pps':>12} {'seen pps':>10} {'seen/off':>8} "
            f"{'drops':>9} {'cpu s':>6} {'cpu %':>6} {'peak RSS':>9} {'lag s':>5} {'records':>7}")
    lines = [head, "-" * len(head)]
    for r in rows:
        ratio = r.seen / r.offered if r.offered else 0.0
        lines.append(
            f"{r.name:<40} {r.generator:<8} {r.seconds:5.1f} {r.offered_pps:12,.0f} {r.seen_pps:10,.0f} "
            f"{ratio:8.3f} {'-' if r.drops is None else f'{r.drops:,}':>9} {r.cpu:6.2f} "
            f"{100 * r.cpu / r.seconds if r.seconds else 0:6.1f} {r.hwm_kb / 1024:7.1f}MB {r.lag:5.1f} "
            f"{'-' if r.records is None else r.records:>7}")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", default="flood,scapy,nmap,sources", help="comma-separated: flood,scapy,nmap,sources")
    ap.add_argument("--seconds", type=float, default=5.0, help="length of each flood (default 5)")
    ap.add_argument("--rate", type=int, default=250_000, help="paced flood rate in pps (default 250000)")
    ap.add_argument("--rates", default="", help="comma-separated paced rates for the detector (default: --rate)")
    ap.add_argument("--sources", type=int, default=1_000_000, help="distinct spoofed sources (default 1,000,000)")
    ap.add_argument("--sources-rate", type=int, default=100_000, help="pps for the sources run (default 100000)")
    ap.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    ap.add_argument("--metrics", action="store_true",
                    help="each flood again with metrics on (endpoint scraped every second + textfile), side by side")
    ap.add_argument("--also-modes", default="", metavar="MODES",
                    help="each paced flood again with these sentries beside atcp (e.g. 'asctp, aproto')")
    args = ap.parse_args()
    parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    args.rates = [int(r) for r in args.rates.split(",") if r.strip()] or [args.rate]

    problem = lab_problem()
    if problem:
        print(f"bench: {problem}", file=sys.stderr)
        return 2
    missing = [t for t in ("trafgen", "hping3", "taskset", "tc") if shutil.which(t) is None]
    if missing:
        print(f"bench: missing {', '.join(missing)}: run scripts/setup.sh --test", file=sys.stderr)
        return 2
    print(f"machine: {machine()}")
    print(f"command: {' '.join([sys.executable, *sys.argv])}")
    sweep_stale()
    rows: list[Row] = []
    flood_count = int(args.seconds * 5_000_000)  # more than any generator here can send in the time
    with tempfile.TemporaryDirectory(prefix="psbench-") as tmp, Lab() as lab:
        work = Path(tmp)
        bench = Bench(lab, work, args.seconds)
        syn = trafgen_conf(lab, work / "syn.cfg")
        if "flood" in parts:
            rows.append(bench.detector_run("detector, SYN flood (max rate)", "trafgen",
                                           trafgen(lab, syn, flood_count), args.seconds))
            print(table(rows[-1:]).splitlines()[-1], flush=True)
            if args.metrics:
                rows.append(bench.detector_run("  same, metrics on", "trafgen", trafgen(lab, syn, flood_count),
                                               args.seconds, metrics=True))
                print(table(rows[-1:]).splitlines()[-1], flush=True)
            rows.append(bench.detector_run("detector, SYN flood (max rate)", "hping3", hping3(lab), args.seconds))
            print(table(rows[-1:]).splitlines()[-1], flush=True)
            for rate in args.rates:
                rows.append(bench.detector_run(f"detector, SYN flood paced {rate:,}", "trafgen+tbf",
                                               trafgen(lab, syn, flood_count, rate), args.seconds, rate))
                print(table(rows[-1:]).splitlines()[-1], flush=True)
                if args.metrics:
                    rows.append(bench.detector_run("  same, metrics on", "trafgen+tbf",
                                                   trafgen(lab, syn, flood_count, rate), args.seconds, rate,
                                                   metrics=True))
                    print(table(rows[-1:]).splitlines()[-1], flush=True)
                if args.also_modes:
                    rows.append(bench.detector_run(f"  same, atcp + {args.also_modes}", "trafgen+tbf",
                                                   trafgen(lab, syn, flood_count, rate), args.seconds, rate,
                                                   args.also_modes))
                    print(table(rows[-1:]).splitlines()[-1], flush=True)
        if "scapy" in parts:
            rows.append(bench.scapy_run(trafgen(lab, syn, flood_count), args.seconds))
            print(table(rows[-1:]).splitlines()[-1], flush=True)
            rows.append(bench.scapy_run(trafgen(lab, syn, flood_count, args.rate), args.seconds, args.rate))
            rows[-1].name = f"scapy sniff, paced {args.rate:,}"
            print(table(rows[-1:]).splitlines()[-1], flush=True)
        if "nmap" in parts:
            rows.append(bench.nmap_run())
            print(table(rows[-1:]).splitlines()[-1], flush=True)
        if "sources" in parts:
            pace(lab, args.sources_rate)
            rows.append(bench.sources_run(args.sources, args.sources_rate))
            pace(lab, None)
            print(table(rows[-1:]).splitlines()[-1], flush=True)
    print()
    print(table(rows))
    print()
    for r in rows:
        if r.extra:
            keep = {k: v for k, v in r.extra.items() if k not in ("samples", "timeline")}
            print(f"{r.name} [{r.generator}]: {' '.join(f'{k}={v}' for k, v in keep.items())}")
        if "samples" in r.extra:
            print("  RSS by packets sent: " + ", ".join(f"{s:,} → {rss / 1024:.1f} MB (peak {hwm / 1024:.1f} MB)"
                                                       for s, rss, hwm in r.extra["samples"]))
    print("\ncpu % is CPU seconds / flood seconds × 100 (one core); seen pps is what the program counted / flood "
          "seconds; lag is how long it kept working after the generator stopped; records are scan+summary records.")
    if args.json:
        Path(args.json).write_text(json.dumps([r.__dict__ for r in rows], indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
