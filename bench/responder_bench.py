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
import ipaddress
import json
import os
import platform
import shutil
import sqlite3
import statistics
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

from tests.lab.detector import VENV_BIN
from tests.lab.machine import cpu_model
from tests.lab.netns import Host, Lab, lab_problem, sweep_stale
from tests.lab.pipeline import ResponderProcess, detector_for, make_config, per_address

ROOT = Path(__file__).resolve().parents[1]

CLK_TCK = os.sysconf("SC_CLK_TCK")
PY = str(VENV_BIN / "python")
OPEN_PORT = 8080
SERVER = ("import socket\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
          f"s.bind(('0.0.0.0',{OPEN_PORT}))\ns.listen(4096)\nprint('ready',flush=True)\n"
          "while True:\n c,_=s.accept(); c.close()\n")
#: A Prometheus-like scraper in the victim namespace: GET the responder's /metrics once a second.
SCRAPER = ("import time,urllib.request\nwhile True:\n try: urllib.request.urlopen("
           "'http://127.0.0.1:9782/metrics',timeout=2).read()\n except OSError: pass\n time.sleep(1)\n")
UDP_SINK = ("import socket,time\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.bind(('0.0.0.0',9))\n"
            "print('ready',flush=True)\ntime.sleep(3600)\n")


def jail(base: Path, bantime: str = "3600") -> str:
    return (f"[DEFAULT]\nlogpath = {base}/alerts.jsonl\nbantime = {bantime}\nbantime.increment = false\n"
            "maxbans_per_minute = 0\n"
            "[portsentinel]\nenabled = true\nfilter = portsentinel\naction = nftables[name=scan]\n")


def scan_record(src: str) -> dict[str, str]:
    """The detector's scan record, as tests/integration/test_pipeline.py's _scan() writes it."""
    return {"MESSAGE": f"attackalert: TCP SYN/Normal scan from host: {src}/{src} to TCP port: 1",
            "SYSLOG_IDENTIFIER": "portsentinel-detector", "PS_EVENT": "scan", "PS_SRC": src, "PS_PROTO": "tcp",
            "PS_PORT": "1", "PS_SCAN": "syn", "PS_MODE": "stcp", "PS_VERIFIED": "0"}


def addresses(first: str, n: int) -> list[str]:
    start = int(ipaddress.IPv4Address(first))
    return [str(ipaddress.IPv4Address(start + i)) for i in range(n)]


def cpu_seconds(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(-(-q * len(s) // 100)) - 1))
    return s[k]


def ms(x: float | None) -> str:
    return "-" if x is None else f"{x * 1000:.2f}"


def journal_records(*matches: str) -> list[dict[str, str]]:
    out = subprocess.run(["journalctl", "--no-pager", "-o", "json", *matches], capture_output=True, text=True,
                         timeout=120)
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


def set_count(host: Host, set_name: str, table: str = "portsentinel") -> int:
    out = host.run(["nft", "-j", "list", "set", "inet", table, set_name], check=False, timeout=120)
    if out.returncode != 0:
        return 0
    for item in json.loads(out.stdout)["nftables"]:
        if "set" in item:
            return len(item["set"].get("elem", []))
    return 0


PROBE = str(ROOT / "bench" / "responder_probe.py")


def watch_begin(lab: Lab, ip: str, limit: float) -> subprocess.Popen[bytes]:
    """From the attacker, probe the victim's open port from ``ip`` (an address about to be banned) every
    millisecond; returns once a probe is answered. ``watch_end`` then says when probes stopped being answered."""
    lab.attacker.run(["ip", "addr", "replace", f"{ip}/32", "dev", lab.attacker.iface])
    lab.victim.run(["ip", "route", "replace", f"{ip}/32", "dev", lab.victim.iface])
    proc = lab.attacker.popen(["timeout", str(int(limit) + 5), PY, PROBE, "--victim", lab.victim.addr4,
                               "--open-port", str(OPEN_PORT), "--interval", "0.001", "--quiet", "0.05",
                               "--watch", str(limit), ip], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != b"ready":
        raise RuntimeError(f"watch probe from {ip}: no answer before the ban")
    return proc


def watch_end(proc: subprocess.Popen[bytes]) -> dict[str, Any]:
    assert proc.stdout is not None
    out = proc.stdout.read().decode()
    proc.wait(30)
    return dict(json.loads(out.strip().splitlines()[-1]))


#: The open-port server of each lab (by the lab's id): one per lab, stopped with the lab's namespaces.
_SERVERS: dict[int, subprocess.Popen[bytes]] = {}


def serve(lab: Lab) -> None:
    """The victim's open TCP port the probes go to (once per lab)."""
    srv = _SERVERS.get(id(lab))
    if srv is None or srv.poll() is not None:
        srv = lab.victim.popen([PY, "-c", SERVER], stdout=subprocess.PIPE)
        assert srv.stdout is not None and srv.stdout.readline().strip() == b"ready"
        _SERVERS[id(lab)] = srv


def start_timed(lab: Lab, resp: ResponderProcess, ip: str, limit: float = 120) -> dict[str, Any]:
    """Start the responder: when ``ip`` stopped getting through (ban in force), when it answered on its socket."""
    watcher = watch_begin(lab, ip, limit)
    t0 = time.time()
    resp.start(timeout=limit)
    t_ready = time.time()
    w = watch_end(watcher)
    assert resp.proc is not None
    return {"t0": t0, "set": w["first_blocked"], "last_ok": w["last_answered"], "ready": t_ready,
            "pid": resp.proc.pid}


# ----------------------------------------------------------------------------- pcap

def read_pcap(path: Path) -> list[tuple[float, bytes]]:
    """(timestamp, IPv4 packet) of an Ethernet pcap written by tcpdump (micro- or nanosecond)."""
    data = path.read_bytes()
    if len(data) < 24:
        return []
    magic = struct.unpack("<I", data[:4])[0]
    endian, scale = {0xA1B2C3D4: ("<", 1e-6), 0xA1B23C4D: ("<", 1e-9),
                     0xD4C3B2A1: (">", 1e-6), 0x4D3CB2A1: (">", 1e-9)}[magic]
    linktype = struct.unpack(endian + "I", data[20:24])[0]
    if linktype != 1:
        raise RuntimeError(f"pcap link type {linktype}, expected Ethernet")
    out, off = [], 24
    while off + 16 <= len(data):
        sec, frac, incl, _ = struct.unpack(endian + "IIII", data[off:off + 16])
        frame = data[off + 16:off + 16 + incl]
        off += 16 + incl
        if len(frame) > 34 and frame[12:14] == b"\x08\x00":
            out.append((sec + frac * scale, frame[14:]))
    return out


def tcp_view(pkt: bytes) -> tuple[str, str, int, int, int] | None:
    if pkt[9] != 6:
        return None
    ihl = (pkt[0] & 0x0F) * 4
    sport, dport = struct.unpack("!HH", pkt[ihl:ihl + 4])
    return (str(ipaddress.IPv4Address(pkt[12:16])), str(ipaddress.IPv4Address(pkt[16:20])), sport, dport,
            pkt[ihl + 13])


def analyse(pcap: Path, victim: str, sources: list[str]) -> dict[str, dict[str, float | None]]:
    """Per source, from the capture: the scan SYN's time, the first probe after which no probe was answered
    (ban in force, upper bound) and the last answered probe after the scan (lower bound)."""
    per: dict[str, dict[str, Any]] = {s: {"scan": None, "probes": [], "answered": set()} for s in sources}
    for ts, pkt in read_pcap(pcap):
        v = tcp_view(pkt)
        if v is None:
            continue
        src, dst, sport, dport, flags = v
        if src in per and dst == victim and flags & 0x12 == 0x02:
            if dport == 1 and per[src]["scan"] is None:
                per[src]["scan"] = ts
            elif dport == OPEN_PORT:
                per[src]["probes"].append((ts, sport))
        elif src == victim and dst in per and sport == OPEN_PORT and flags & 0x12 == 0x12:
            per[dst]["answered"].add(dport)
    out: dict[str, dict[str, float | None]] = {}
    for s, d in per.items():
        scan = d["scan"]
        if scan is None:
            out[s] = {"scan": None, "force": None, "lower": None, "pre_ok": 0}
            continue
        after = [(ts, sp) for ts, sp in d["probes"] if ts > scan]
        answered_after = [ts for ts, sp in after if sp in d["answered"]]
        last_ok = max(answered_after) if answered_after else None
        blocked = [ts for ts, _ in after if last_ok is None or ts > last_ok]
        pre_ok = sum(1 for ts, sp in d["probes"] if ts < scan and sp in d["answered"])
        out[s] = {"scan": scan, "force": blocked[0] if blocked else None, "lower": last_ok, "pre_ok": pre_ok}
    return out


# ----------------------------------------------------------------------------- parts

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

    # ------------------------------------------------------------------ 3. restart
    def fill_store(self, state: Path, ips: list[str]) -> None:
        from portsentinel.responder.adapters.store import Store

        Store(str(state / "responder.sqlite3")).close()  # the responder's own schema
        db = sqlite3.connect(str(state / "responder.sqlite3"))
        now = time.time()
        info = json.dumps({"port": "1", "proto": "tcp", "scan": "syn"}, sort_keys=True)
        with db:
            db.executemany("INSERT OR REPLACE INTO bans VALUES (?,?,?,?,?,?,?)",
                           ((("portsentinel", ip, now, now + 7200, 1, 1, info)) for ip in ips))
        db.close()

    def restart(self, lab: Lab) -> None:
        n = self.args.restart_bans
        base = self.work / "restart"
        base.mkdir()
        cfg = make_config(base, jail(base, "7200"))
        ips = addresses("100.64.0.1", n)
        (base / "alerts.jsonl").touch(mode=0o640)
        self.fill_store(base / "state", ips)
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
                r["count"] = set_count(lab.victim, "scan_v4")
                r["cpu"] = cpu_seconds(r["pid"])
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

    # ------------------------------------------------------------------ 4. throughput
    def throughput(self) -> None:
        n = self.args.restart_bans
        with Lab(hosts=3) as lab:
            third = lab.extra[0]
            sink = lab.victim.popen([PY, "-c", UDP_SINK], stdout=subprocess.PIPE)
            assert sink.stdout is not None and sink.stdout.readline().strip() == b"ready"
            conf = self.work / "udp.trafgen"
            conf.write_text(textwrap.dedent(f"""\
                {{
                  eth(da={self._mac(lab.victim)}, sa={self._mac(third)}, type=0x0800),
                  ipv4(sa={third.addr4}, da={lab.victim.addr4}, ttl=64),
                  udp(sp=dinc(1025, 60000), dp=9),
                  fill(0x00, 18)
                }}
                """))
            lab.victim.run(["ip", "neigh", "replace", third.addr4, "lladdr", self._mac(third), "dev", "br0"])
            rows: list[dict[str, Any]] = []

            def measure(name: str) -> None:
                for _ in range(self.args.reps):
                    rows.append({"config": name, **self._udp(lab, third, conf), **self._ping(lab, third)})

            measure("no rules")
            # The nft set: a responder restoring the 100k bans of part 3 (or a fresh store of them).
            base = self.work / "throughput"
            base.mkdir()
            cfg = make_config(base, jail(base, "7200"))
            (base / "alerts.jsonl").touch(mode=0o640)
            ips = addresses("100.64.0.1", n)
            if getattr(self, "restart_state", None):
                shutil.copytree(self.restart_state, base / "state")
            else:
                (base / "state").mkdir()
                self.fill_store(base / "state", ips)
            resp = ResponderProcess(lab.victim, base, cfg, backend="pyinotify")
            try:
                resp.start(timeout=120)
                count = set_count(lab.victim, "scan_v4")
                assert count == n, count
                measure(f"nft set, {count} elements")
            finally:
                resp.stop()
            lab.victim.run(["nft", "delete", "table", "inet", "portsentinel"], check=False)
            rules = "".join(f"-A bench -s {ip}/32 -j DROP\n" for ip in ips)
            restore = f"*filter\n:INPUT ACCEPT [0:0]\n:bench - [0:0]\n-A INPUT -j bench\n{rules}COMMIT\n"
            load: dict[str, float] = {}
            for cmd in ("iptables", "iptables-legacy"):
                t0 = time.monotonic()
                lab.victim.run(["timeout", "600", f"{cmd}-restore"], input=restore, timeout=620)
                load[cmd] = time.monotonic() - t0
                got = lab.victim.run([cmd, "-S", "bench"], timeout=300).stdout.count("-j DROP")
                measure(f"{cmd}: {got} rules" + (" (nf_tables)" if cmd == "iptables" else " (x_tables)"))
                lab.victim.run([cmd, "-F"], timeout=300)
                lab.victim.run([cmd, "-X", "bench"], timeout=300)
            measure("no rules (again)")
        self.results["throughput"] = {"rows": rows, "iptables_restore_s": load}
        print(f"\n== 4. legitimate small-packet traffic from a third host (not banned), {self.args.seconds:g} s runs "
              f"x {self.args.reps}")
        print(f"{'config':<38}{'UDP pps delivered':>18}{'%none':>7}{'ICMP echo tx/s':>16}{'%none':>7}"
              f"{'avg rtt us':>12}")
        none = [r for r in rows if r["config"] == "no rules"]
        udp0 = statistics.median(r["udp_pps"] for r in none)
        rr0 = statistics.median(r["echo_tps"] for r in none)
        for name in dict.fromkeys(r["config"] for r in rows):
            rs = [r for r in rows if r["config"] == name]
            udp = statistics.median(r["udp_pps"] for r in rs)
            rr = statistics.median(r["echo_tps"] for r in rs)
            rtt = statistics.median(r["rtt_us"] for r in rs)
            print(f"{name:<38}{udp:>18.0f}{100 * udp / udp0:>6.0f}%{rr:>16.0f}{100 * rr / rr0:>6.0f}%{rtt:>12.1f}")
        print("  iptables-restore of 100k rules: " + ", ".join(f"{k} {v:.1f} s" for k, v in load.items()))

    @staticmethod
    def _mac(host: Host) -> str:
        return str(json.loads(host.run(["ip", "-j", "link", "show", "dev", host.iface]).stdout)[0]["address"])

    @staticmethod
    def _udp_counters(host: Host) -> int:
        lines = host.run(["cat", "/proc/net/snmp"]).stdout.splitlines()
        udp = [line.split()[1:] for line in lines if line.startswith("Udp:")]
        d = dict(zip(udp[0], map(int, udp[1]), strict=True))
        return d["InDatagrams"] + d["RcvbufErrors"]

    def _udp(self, lab: Lab, third: Host, conf: Path) -> dict[str, float]:
        secs = self.args.seconds
        c0 = self._udp_counters(lab.victim)
        t0 = time.monotonic()
        third.run(["timeout", str(secs), "taskset", "-c", "0", "trafgen", "-o", third.iface, "-c", str(conf),
                   "-n", str(int(secs * 3_000_000)), "-P", "1", "--no-sock-mem", "-q"], check=False,
                  timeout=secs + 30)
        elapsed = time.monotonic() - t0
        time.sleep(0.2)
        return {"udp_pps": (self._udp_counters(lab.victim) - c0) / elapsed}

    def _ping(self, lab: Lab, third: Host) -> dict[str, float]:
        secs = int(self.args.seconds)
        out = third.run(["timeout", str(secs + 5), "ping", "-n", "-q", "-f", "-s", "16", "-c", "1000000",
                         "-w", str(secs), lab.victim.addr4], check=False, timeout=secs + 20).stdout
        rx, ms_total, rtt = 0, 1.0, 0.0
        for line in out.splitlines():
            if "received" in line:
                parts = [p.strip() for p in line.split(",")]
                rx = int(parts[1].split()[0])
                ms_total = float(next(p for p in parts if p.startswith("time")).split()[1].rstrip("ms"))
            if line.startswith("rtt"):
                rtt = float(line.split("=")[1].split("/")[1]) * 1000
        return {"echo_tps": rx / (ms_total / 1000), "rtt_us": rtt}


def machine() -> str:
    model = cpu_model()
    nft = subprocess.run(["nft", "--version"], capture_output=True, text=True).stdout.strip()
    return (f"{platform.node()}: {os.cpu_count()} CPU ({model}), kernel {platform.release()}, {nft}, "
            f"python {platform.python_version()}")


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
            bench.throughput()
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
