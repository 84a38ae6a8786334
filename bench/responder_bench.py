#!/usr/bin/env python3
"""Responder benchmark: scan-to-ban latency, ban rate, restart with 100k bans, throughput under 100k bans.

Run as root inside the private journald (``bash bench/run-responder.sh``, which does the ``unshare`` and
``scripts/with-journald.sh`` dance). Everything happens in fresh namespace labs (tests/lab/netns.py): traffic
only from the attacker or third namespace to the victim's address; every nft/iptables command runs in the
victim namespace; every generator is bounded by ``timeout`` and a packet count. It prints figures; it is a
benchmark, not a test (docs/performance.md).

Parts (``--parts``, default all):
  latency     first probe on the wire -> ban in force in the kernel, file (pyinotify) and journald backends
  rate        10,000 scan records in the JSON-lines file -> all in the nft set; baseline: one nft call per ban
  restart     100,000 bans in the responder's sqlite, nft table deleted, responder started -> all in force
  throughput  small UDP packets/s and ICMP echo transactions/s from a third host with: no rules, the nft set
              of 100k, 100k per-address iptables rules (nf_tables backend, and legacy x_tables)
  reban       re-ban after expiry (the source probing through its ban) side by side with its first ban, both
              backends (bench/reban.py; not in the default list)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.lab.netns import Lab, lab_problem, sweep_stale
from tests.lab.pipeline import ResponderProcess, detector_for, make_config, per_address

from .pcap_view import analyse
from .responder_lab import (
    OPEN_PORT,
    PY,
    ROOT,
    SCRAPER,
    addresses,
    cpu_seconds,
    fill_store,
    jail,
    journal_records,
    machine,
    ms,
    pct,
    scan_record,
    serve,
    set_count,
    start_timed,
    watch_begin,
    watch_end,
)


class Bench:
    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args = args
        self.work = work
        self.results: dict[str, Any] = {}

    def journald(self) -> bool:
        return os.path.exists("/run/systemd/journal/socket") and bool(os.environ.get("PORTSENTINEL_PRIVATE_JOURNALD"))

    # ------------------------------------------------------------------ 1. latency
    def latency(self, lab: Lab) -> None:
        n = self.args.scans
        warm = 3
        backends = ["pyinotify"] + (["systemd"] if self.journald() else [])
        if len(backends) == 1:
            print("latency: no private journald (run through bench/run-responder.sh): journald backend skipped")
        pool = [a4 for a4, _ in lab.aliases(lab.attacker, (n + warm) * len(backends))]
        serve(lab)
        res: dict[str, Any] = {}
        for b_i, backend in enumerate(backends):
            sources = pool[b_i * (n + warm):(b_i + 1) * (n + warm)]
            base = self.work / f"latency-{backend}"
            base.mkdir()
            cfg = make_config(base, jail(base))
            output = "jsonl" if backend == "pyinotify" else "journal"
            pcap = self.work / f"probe-{backend}.pcap"  # not in base: the file source watches that directory
            det = detector_for(lab.victim, base, "stcp", output=output)
            resp = ResponderProcess(lab.victim, base, cfg, backend=backend)
            if self.args.profile:  # cProfile around the programs (written at their clean exit on SIGTERM)
                resp.argv = [PY, "-m", "cProfile", "-o", str(self.args.profile / f"responder-{backend}.prof"),
                             *resp.argv]
                det.argv = [PY, "-m", "cProfile", "-o", str(self.args.profile / f"detector-{backend}.prof"),
                            *det.argv]
            with det, resp:
                dump = lab.attacker.popen(["timeout", "600", "tcpdump", "-i", lab.attacker.iface, "-n", "-s", "96",
                                           "-B", "16384", "-U", "--immediate-mode", "--time-stamp-precision=nano",
                                           "-w", str(pcap),
                                           f"tcp and host {lab.victim.addr4}"], stderr=subprocess.PIPE)
                assert dump.stderr is not None
                dump.stderr.readline()  # "listening on …": the capture is armed
                time.sleep(0.2)
                bound = int(len(sources) * 1.5 + 30)
                gen = lab.attacker.run(["timeout", str(bound), PY, str(ROOT / "bench" / "responder_probe.py"),
                                        "--victim", lab.victim.addr4, "--open-port", str(OPEN_PORT),
                                        "--interval", str(self.args.interval), "--window", "1.0",
                                        *sources], check=False, timeout=bound + 20)
                time.sleep(0.3)
                dump.terminate()
                dump.wait(10)
                if gen.returncode != 0:
                    raise RuntimeError(f"probe generator failed: {gen.stderr[-2000:]}")
                gen_view = {d["src"]: d for d in map(json.loads, gen.stdout.splitlines())}
                det_recs = (det.records() if output == "jsonl" else
                            journal_records("SYSLOG_IDENTIFIER=portsentinel-detector", "PS_EVENT=scan"))
                assert resp.proc is not None
                dec_recs = journal_records("SYSLOG_IDENTIFIER=portsentinel-responder", "PS_EVENT=ban",
                                           f"_PID={resp.proc.pid}") if self.journald() else resp.records()
                in_set = lab.victim.run(["nft", "list", "set", "inet", "portsentinel", "scan_v4"]).stdout
            view = analyse(pcap, lab.victim.addr4, sources)
            det_t = {r["PS_SRC"]: float(r["PS_TIME"]) for r in det_recs if r.get("PS_EVENT") == "scan"}
            det_j = {r["PS_SRC"]: int(r["__REALTIME_TIMESTAMP"]) / 1e6 for r in det_recs
                     if "__REALTIME_TIMESTAMP" in r}
            dec_t = {r["PS_SRC"]: float(r["PS_TIME"]) for r in dec_recs if r.get("PS_SRC")}
            rows, problems = [], []
            for s in sources[warm:]:
                v = view[s]
                if v["scan"] is None or v["force"] is None or s not in in_set:
                    problems.append(f"{s}: scan={v['scan']} force={v['force']} in_set={s in in_set} "
                                    f"gen={gen_view.get(s)}")
                    continue
                scan = float(v["scan"])
                rows.append({"src": s, "force": float(v["force"]) - scan,
                             "lower": None if v["lower"] is None else float(v["lower"]) - scan,
                             "detector": det_t[s] - scan if s in det_t else None,
                             "journal": det_j[s] - scan if s in det_j else None,
                             "decision": dec_t[s] - scan if s in dec_t else None,
                             "responder": float(v["force"]) - det_t[s] if s in det_t else None,
                             "pre_ok": v["pre_ok"]})
            res[backend] = {"rows": rows, "problems": problems}
        self.results["latency"] = res
        print("\n== 1. scan on the wire -> ban in force (ms; probe SYN every "
              f"{self.args.interval * 1000:g} ms from the scanning source; {n} scans per backend)")
        print(f"{'backend':<11}{'stage':<40}{'median':>9}{'p99':>9}{'max':>9}{'n':>5}")
        for backend, r in res.items():
            stages = [("detector record built (PS_TIME)", "detector"),
                      ("record in the journal (__REALTIME)", "journal"),
                      ("last probe still answered (lower)", "lower"),
                      ("BAN IN FORCE (first unanswered probe)", "force"),
                      ("responder's ban record (PS_TIME)", "decision"),
                      ("(in force - detector record built)", "responder")]
            for label, key in stages:
                vals = [x[key] for x in r["rows"] if x[key] is not None]
                if not vals:
                    continue
                print(f"{backend:<11}{label:<40}{ms(statistics.median(vals)):>9}{ms(pct(vals, 99)):>9}"
                      f"{ms(max(vals)):>9}{len(vals):>5}")
            for p in r["problems"][:5]:
                print(f"  ! {p}")

    # ------------------------------------------------------------------ 2. rate
    def rate(self, lab: Lab, metrics: bool = False) -> None:
        """``metrics``: the same with the responder's metrics on (endpoint scraped every second, textfile written
        every second), for the side-by-side cost (``--metrics``)."""
        n = self.args.bans
        base = self.work / ("rate-metrics" if metrics else "rate")
        base.mkdir()
        cfg = make_config(base, jail(base))
        alerts = base / "alerts.jsonl"
        alerts.touch()
        os.chmod(alerts, 0o640)
        ips = addresses("198.19.0.1", n)
        payload = "".join(json.dumps(scan_record(ip)) + "\n" for ip in ips).encode()
        out: dict[str, Any] = {"n": n}
        resp = ResponderProcess(lab.victim, base, cfg, backend="pyinotify")
        if metrics:
            resp.argv += ["--metrics-listen", "127.0.0.1:9782", "--metrics-textfile", str(base / "responder.prom"),
                          "--metrics-interval", "1"]
        with resp:
            assert resp.proc is not None
            pid = resp.proc.pid
            scraper = lab.victim.popen(["timeout", "200", PY, "-c", SCRAPER]) if metrics else None
            serve(lab)
            watcher = watch_begin(lab, ips[-1], 120)
            cpu0 = cpu_seconds(pid)
            fd = os.open(alerts, os.O_WRONLY | os.O_APPEND)
            t0 = time.time()
            os.write(fd, payload)
            os.close(fd)
            t_set = watch_end(watcher)["first_blocked"]
            cpu_set = cpu_seconds(pid)
            count = set_count(lab.victim, "scan_v4")
            decided: list[dict[str, str]] = []
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                decided = (journal_records("SYSLOG_IDENTIFIER=portsentinel-responder", "PS_EVENT=ban", f"_PID={pid}")
                           if self.journald() else resp.records())
                decided = [r for e in decided for r in per_address(e) if r.get("PS_SRC")]  # aggregated: per address
                if len(decided) >= n:
                    break
                time.sleep(0.5)
            cpu1 = cpu_seconds(pid)
            last_dec = max((float(r["PS_TIME"]) for r in decided), default=None)
            status = resp.ask("status")
            if scraper is not None:
                scraper.terminate()
                scraper.wait(10)
        out.update(set_s=None if t_set is None else t_set - t0, in_set=count, decisions=len(decided),
                   decisions_s=None if last_dec is None else last_dec - t0, cpu_to_set=cpu_set - cpu0,
                   cpu_total=cpu1 - cpu0,
                   banned=status.get("jails", {}).get("portsentinel", {}).get("bans_total"))
        if metrics:
            self.results["rate_metrics"] = out
            off = self.results.get("rate", {})
            print("\n== 2b. the same with metrics on (/metrics scraped every second, textfile every second)")
            for key, label in (("set_s", "all in force"), ("decisions_s", "ban records written")):
                if out[key] and off.get(key):
                    print(f"  {label:<22} off {n / off[key]:9.0f} bans/s   on {n / out[key]:9.0f} bans/s   "
                          f"ratio on/off {off[key] / out[key]:.3f}")
            if off.get("cpu_total"):
                print(f"  responder CPU          off {off['cpu_total']:.2f} s   on {out['cpu_total']:.2f} s")
            return
        # Baselines: one nft process per ban (fail2ban's stock nftables action does this), iptables one by one.
        out["nft_single"] = self._single_calls(lab, "nft", self.args.baseline_n)
        out["iptables_single"] = self._single_calls(lab, "iptables", self.args.iptables_n)
        self.results["rate"] = out
        print(f"\n== 2. {n} scan records from distinct sources written at once to the JSON-lines file "
              "(file backend, maxbans_per_minute = 0)")
        if out["set_s"]:
            print(f"  all {n} in force (the last one's probes dropped) after {out['set_s'] * 1000:9.1f} ms -> "
                  f"{n / out['set_s']:9.0f} bans/s"
                  f"   (set holds {count}; responder CPU {out['cpu_to_set']:.2f} s)")
        else:
            print(f"  the last address was never blocked (the set holds {count})")
        if out["decisions_s"]:
            print(f"  {len(decided)} ban records (PS_TIME) written after {out['decisions_s'] * 1000:9.1f} ms -> "
                  f"{len(decided) / out['decisions_s']:9.0f} /s   (responder CPU {out['cpu_total']:.2f} s in all)")
        for key, label in (("nft_single", "baseline: one `nft add element` process per ban"),
                           ("iptables_single", "baseline: one `iptables -I … -s IP -j DROP` per ban")):
            b = out[key]
            print(f"  {label:<52} {b['n']:6d} in {b['seconds']:8.2f} s -> {b['n'] / b['seconds']:9.0f} bans/s")

    def _single_calls(self, lab: Lab, kind: str, n: int) -> dict[str, Any]:
        ips = addresses("198.19.128.1", n)
        if kind == "nft":
            lab.victim.run(["nft", "add table inet bench; add set inet bench b_v4 { type ipv4_addr; flags timeout; }"])
            cmd = 'nft add element inet bench b_v4 "{ $ip timeout 3600s }"'
        else:
            lab.victim.run(["iptables", "-w", "-N", "bench"])
            cmd = "iptables -w -I bench 1 -s $ip -j DROP"
        script = self.work / f"single-{kind}.sh"
        script.write_text(f"while read -r ip; do {cmd} || exit 1; done\n")
        t0 = time.monotonic()
        lab.victim.run(["timeout", "900", "bash", str(script)], input="\n".join(ips) + "\n", timeout=960)
        seconds = time.monotonic() - t0
        if kind == "nft":
            got = set_count(lab.victim, "b_v4", table="bench")
            lab.victim.run(["nft", "delete", "table", "inet", "bench"])
        else:
            got = lab.victim.run(["iptables", "-S", "bench"]).stdout.count("-j DROP")
            lab.victim.run(["iptables", "-w", "-F", "bench"])
            lab.victim.run(["iptables", "-w", "-X", "bench"])
        return {"n": n, "seconds": seconds, "applied": got}

    def restart(self, lab: Lab) -> None:
        n = self.args.restart_bans
        base = self.work / "restart"
        base.mkdir()
        cfg = make_config(base, jail(base, "7200"))
        ips = addresses("100.64.0.1", n)
        (base / "alerts.jsonl").touch(mode=0o640)
        fill_store(base / "state", ips)
        self.restart_state = base / "state"
        resp = ResponderProcess(lab.victim, base, cfg, backend="pyinotify")
        serve(lab)
        runs = []
        try:
            for i in range(self.args.restarts + 1):
                if i:
                    resp.stop()
                    lab.victim.run(["nft", "delete", "table", "inet", "portsentinel"], check=False)
                r = start_timed(lab, resp, ips[-1])
                r["cpu"] = cpu_seconds(r["pid"])  # before the listing below (nft's own time is not the responder's)
                if n <= 200_000:
                    r["count"] = set_count(lab.victim, "scan_v4")
                else:  # the JSON listing of 1,000,000 takes many minutes; the text one about one
                    listed = lab.victim.run(["nft", "list", "set", "inet", "portsentinel", "scan_v4"],
                                            timeout=max(300, n / 1000)).stdout
                    r["count"] = listed.count(" expires ")
                runs.append(r)
        finally:
            if resp.proc is not None and resp.proc.poll() is None:
                resp.stop()
        self.results["restart"] = runs
        print(f"\n== 3. restart with {n} bans in the responder's sqlite, `nft delete table inet portsentinel` before "
              "each start (run 0: first start in a fresh namespace)")
        print(f"{'run':>4}{'start -> all in force':>26}{'start -> answering':>22}{'set holds':>12}{'CPU s':>8}")
        for i, r in enumerate(runs):
            s = None if r["set"] is None else r["set"] - r["t0"]
            print(f"{i:>4}{ms(s):>23} ms{ms(r['ready'] - r['t0']):>19} ms{r['count']:>12}{r['cpu']:>8.2f}")
        vals = [r["set"] - r["t0"] for r in runs[1:] if r["set"] is not None]
        if vals:
            print(f"  median of the restarts: {ms(statistics.median(vals))} ms")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--parts", default="latency,rate,restart,throughput")
    p.add_argument("--scans", type=int, default=60, help="scans per backend (latency)")
    p.add_argument("--interval", type=float, default=0.0005, help="probe interval, seconds (latency)")
    p.add_argument("--bans", type=int, default=10_000, help="distinct sources (rate)")
    p.add_argument("--baseline-n", type=int, default=10_000, help="single nft calls (rate baseline)")
    p.add_argument("--iptables-n", type=int, default=2_000, help="single iptables calls (rate baseline)")
    p.add_argument("--restart-bans", type=int, default=100_000)
    p.add_argument("--restarts", type=int, default=3)
    p.add_argument("--seconds", type=float, default=3.0, help="length of each throughput run")
    p.add_argument("--reps", type=int, default=2, help="runs per throughput configuration")
    p.add_argument("--rebans", type=int, default=12, help="sources per backend (reban)")
    p.add_argument("--reban-bantime", type=float, default=1.0, help="bantime in seconds (reban)")
    p.add_argument("--json", type=Path, help="also write every figure here")
    p.add_argument("--metrics", action="store_true", help="rate: again with metrics on, side by side")
    p.add_argument("--profile", type=Path, help="latency: run detector and responder under cProfile, into DIR")
    args = p.parse_args()
    problem = lab_problem()
    if problem:
        print(f"responder bench: {problem}", file=sys.stderr)
        return 2
    if args.scans + 3 > 75 and "latency" in args.parts:
        raise SystemExit("--scans: at most 72 (one /24 of attacker aliases for both backends)")
    parts = args.parts.split(",")
    print(machine())
    print(time.strftime("%Y-%m-%d %H:%M:%S %Z"), "| private journald:",
          "yes" if os.environ.get("PORTSENTINEL_PRIVATE_JOURNALD") else "no")
    sweep_stale()
    with tempfile.TemporaryDirectory(prefix="ps-rbench-") as tmp:
        bench = Bench(args, Path(tmp))
        if {"latency", "rate", "restart"} & set(parts):
            with Lab() as lab:
                for part in ("latency", "rate", "restart"):
                    if part in parts:
                        getattr(bench, part)(lab)
                    if part == "rate" and "rate" in parts and args.metrics:
                        bench.rate(lab, metrics=True)
        if "throughput" in parts:
            from .responder_throughput import run as throughput

            throughput(bench)
        if "reban" in parts:
            from .reban import run as reban

            if args.rebans > 60 or args.reban_bantime < 1:
                raise SystemExit("--rebans: at most 60; --reban-bantime: at least 1 s (the nft timeout's unit)")
            with Lab() as lab:
                reban(bench, lab)
        if args.json:
            args.json.write_text(json.dumps(bench.results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
