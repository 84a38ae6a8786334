"""Re-ban latency after expiry, side by side with first-ban latency in the same run (issue 9 §3).

The ``reban`` part of bench/responder_bench.py (``bash bench/run-responder.sh --parts reban``). Per source, in
the lab's attacker namespace, bench/responder_probe.py ``--rounds 2``: a SYN to the watched port 1 (the scan),
SYN probes to the victim's open port every ``--interval`` until they stop being answered (ban in force); through
the ban (``--reban-bantime``, 1 s) a SYN to port 1 every 250 ms (nftables drops them, the detector's capture sees
them, so the source stays "reported" without a re-arm); once a probe is answered again (the ban ended), the rescan:
one more SYN to port 1, measured like the first. Times come from a tcpdump capture on the attacker's interface:

- first ban:  the scan SYN on the wire -> the first probe after which none is answered (ban in force);
- re-ban:     the rescan SYN on the wire -> the same, in the same run, from the same source;
- gaps:       the ban ended on the wire (first answered probe) -> the rescan SYN; the responder's unban record ->
              the detector's re-armed summary (both PS_TIME).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.lab.netns import Lab
from tests.lab.pipeline import ResponderProcess, detector_for, make_config

from .pcap_view import read_pcap, tcp_view
from .responder_lab import OPEN_PORT, PROBE, PY, jail, journal_records, ms, pct, serve

if TYPE_CHECKING:
    from .responder_bench import Bench

SCAN_PORT = 1
#: A ban is "in force" at the first probe followed by this many unanswered ones.
QUIET_PROBES = 20


def rounds_view(pcap: Path, victim: str, sources: list[str]) -> dict[str, dict[str, float | None]]:
    """Per source: scan1, force1, end1 (first answered probe after force1), scan2, force2 (wire times)."""
    per: dict[str, dict[str, Any]] = {s: {"scans": {}, "probes": [], "answered": set()} for s in sources}
    for ts, pkt in read_pcap(pcap):
        v = tcp_view(pkt)
        if v is None:
            continue
        src, dst, sport, dport, flags = v
        if src in per and dst == victim and flags & 0x12 == 0x02:
            if dport == SCAN_PORT and 60000 < sport < 61000:
                per[src]["scans"].setdefault(sport - 60000, ts)
            elif dport == OPEN_PORT:
                per[src]["probes"].append((ts, sport))
        elif src == victim and dst in per and sport == OPEN_PORT and flags & 0x12 == 0x12:
            per[dst]["answered"].add(dport)
    out: dict[str, dict[str, float | None]] = {}
    for s, d in per.items():
        probes = [(ts, sp in d["answered"]) for ts, sp in d["probes"]]
        row: dict[str, float | None] = {"scan1": d["scans"].get(1), "scan2": d["scans"].get(2)}
        row["force1"] = _force(probes, row["scan1"])
        row["end1"] = next((ts for ts, ok in probes if row["force1"] is not None and ts > row["force1"] and ok),
                           None)
        row["force2"] = _force(probes, row["scan2"])
        out[s] = row
    return out


def _force(probes: list[tuple[float, bool]], after: float | None) -> float | None:
    if after is None:
        return None
    later = [(ts, ok) for ts, ok in probes if ts > after]
    for i, (ts, ok) in enumerate(later):
        run = later[i:i + QUIET_PROBES]
        if not ok and len(run) == QUIET_PROBES and not any(o for _, o in run):
            return ts
    return None


def run(bench: Bench, lab: Lab) -> None:
    args = bench.args
    n = args.rebans
    backends = ["pyinotify"] + (["systemd"] if bench.journald() else [])
    if len(backends) == 1:
        print("reban: no private journald (run through bench/run-responder.sh): journald backend skipped")
    pool = [a4 for a4, _ in lab.aliases(lab.attacker, n * len(backends))]
    serve(lab)
    res: dict[str, Any] = {}
    for b_i, backend in enumerate(backends):
        sources = pool[b_i * n:(b_i + 1) * n]
        base = bench.work / f"reban-{backend}"
        base.mkdir()
        cfg = make_config(base, jail(base, str(args.reban_bantime)))
        output = "jsonl" if backend == "pyinotify" else "journal"
        pcap = bench.work / f"reban-{backend}.pcap"
        det = detector_for(lab.victim, base, "stcp", output=output)
        with det, ResponderProcess(lab.victim, base, cfg, backend=backend) as resp:
            dump = lab.attacker.popen(["timeout", "600", "tcpdump", "-i", lab.attacker.iface, "-n", "-s", "96",
                                       "-B", "16384", "-U", "--immediate-mode", "--time-stamp-precision=nano",
                                       "-w", str(pcap), f"tcp and host {lab.victim.addr4}"], stderr=subprocess.PIPE)
            assert dump.stderr is not None
            dump.stderr.readline()  # "listening on …": the capture is armed
            time.sleep(0.2)
            bound = int(len(sources) * (args.reban_bantime + 4) + 30)
            gen = lab.attacker.run(["timeout", str(bound), PY, PROBE, "--victim", lab.victim.addr4,
                                    "--open-port", str(OPEN_PORT), "--scan-port", str(SCAN_PORT),
                                    "--interval", str(args.interval), "--window", "1.0", "--quiet", "0.05",
                                    "--rounds", "2", "--through", "0.25", "--ban-wait", str(args.reban_bantime + 5),
                                    *sources],
                                   check=False, timeout=bound + 20)
            time.sleep(0.3)
            dump.terminate()
            dump.wait(10)
            if gen.returncode != 0:
                raise RuntimeError(f"probe generator failed: {gen.stderr[-2000:]}")
            gen_view = {d["src"]: d for d in map(json.loads, gen.stdout.splitlines())}
            det_recs = (det.records() if output == "jsonl" else
                        journal_records("SYSLOG_IDENTIFIER=portsentinel-detector"))
            assert resp.proc is not None
            dec_recs = (journal_records("SYSLOG_IDENTIFIER=portsentinel-responder", f"_PID={resp.proc.pid}")
                        if bench.journald() else resp.records())
        view = rounds_view(pcap, lab.victim.addr4, sources)
        rows, problems = [], []
        for s in sources:
            v = view[s]
            if None in (v["scan1"], v["force1"], v["scan2"], v["force2"], v["end1"]) or "error" in gen_view.get(s, {}):
                problems.append(f"{s}: {v} gen={gen_view.get(s)}")
                continue
            unban = min((float(r["PS_TIME"]) for r in dec_recs
                         if r.get("PS_SRC") == s and r.get("PS_EVENT") == "unban"), default=None)
            rearmed = min((float(r["PS_TIME"]) for r in det_recs
                           if r.get("PS_SRC") == s and r.get("PS_DETAIL") == "rearmed"), default=None)
            scans = sorted(float(r["PS_TIME"]) for r in det_recs
                           if r.get("PS_SRC") == s and r.get("PS_EVENT") == "scan")
            f = {k: float(x) for k, x in v.items() if x is not None}
            rows.append({"src": s, "first": f["force1"] - f["scan1"], "reban": f["force2"] - f["scan2"],
                         "first_detector": scans[0] - f["scan1"] if scans else None,
                         "reban_detector": scans[1] - f["scan2"] if len(scans) > 1 else None,
                         "ended_to_rescan": f["scan2"] - f["end1"],
                         "unban_to_rearmed": rearmed - unban if rearmed is not None and unban is not None else None,
                         "scan_records": len(scans)})
        res[backend] = {"rows": rows, "problems": problems}
    bench.results["reban"] = res
    print(f"\n== re-ban after expiry, side by side with the first ban (ms; the same {n} sources per backend, "
          f"bantime {args.reban_bantime:g} s, a SYN to port {SCAN_PORT} every 250 ms through the ban, open-port "
          f"probes every {args.interval * 1000:g} ms)")
    print(f"{'backend':<11}{'stage':<48}{'median':>9}{'p99':>9}{'max':>9}{'n':>5}")
    for backend, r in res.items():
        for label, key in (("FIRST BAN: scan SYN -> ban in force", "first"),
                           ("RE-BAN: rescan SYN -> ban in force", "reban"),
                           ("first: scan SYN -> detector's scan record", "first_detector"),
                           ("re-ban: rescan SYN -> detector's scan record", "reban_detector"),
                           ("ban ended on the wire -> rescan SYN", "ended_to_rescan"),
                           ("unban record -> detector re-armed (PS_TIME)", "unban_to_rearmed")):
            vals = [x[key] for x in r["rows"] if x[key] is not None]
            if vals:
                print(f"{backend:<11}{label:<48}{ms(statistics.median(vals)):>9}{ms(pct(vals, 99)):>9}"
                      f"{ms(max(vals)):>9}{len(vals):>5}")
        extra = [x["scan_records"] for x in r["rows"] if x["scan_records"] != 2]
        if extra:
            print(f"  ! {len(extra)} source(s) with other than 2 scan records: {extra}")
        for p in r["problems"][:5]:
            print(f"  ! {p}")
