"""The ``throughput`` part of bench/responder_bench.py: legitimate small-packet traffic (UDP packets/s, ICMP echo
transactions/s) from a third host that is not banned, with no rules, the responder's nft set of 100k bans, and
100k per-address iptables rules (nf_tables backend, and legacy x_tables)."""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import textwrap
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.lab.netns import Host, Lab
from tests.lab.pipeline import ResponderProcess, make_config

from .responder_lab import PY, UDP_SINK, addresses, fill_store, jail, set_count

if TYPE_CHECKING:
    from .responder_bench import Bench


def run(bench: Bench) -> None:
    """Part 4: small UDP packets/s and ICMP echo transactions/s from a third host against each rule set."""
    n = bench.args.restart_bans
    with Lab(hosts=3) as lab:
        third = lab.extra[0]
        sink = lab.victim.popen([PY, "-c", UDP_SINK], stdout=subprocess.PIPE)
        assert sink.stdout is not None and sink.stdout.readline().strip() == b"ready"
        conf = bench.work / "udp.trafgen"
        conf.write_text(textwrap.dedent(f"""\
            {{
              eth(da={_mac(lab.victim)}, sa={_mac(third)}, type=0x0800),
              ipv4(sa={third.addr4}, da={lab.victim.addr4}, ttl=64),
              udp(sp=dinc(1025, 60000), dp=9),
              fill(0x00, 18)
            }}
            """))
        lab.victim.run(["ip", "neigh", "replace", third.addr4, "lladdr", _mac(third), "dev", "br0"])
        rows: list[dict[str, Any]] = []

        def measure(name: str) -> None:
            secs = bench.args.seconds
            for _ in range(bench.args.reps):
                rows.append({"config": name, **_udp(lab, third, conf, secs), **_ping(lab, third, secs)})

        measure("no rules")
        # The nft set: a responder restoring the 100k bans of part 3 (or a fresh store of them).
        base = bench.work / "throughput"
        base.mkdir()
        cfg = make_config(base, jail(base, "7200"))
        (base / "alerts.jsonl").touch(mode=0o640)
        ips = addresses("100.64.0.1", n)
        if getattr(bench, "restart_state", None):
            shutil.copytree(bench.restart_state, base / "state")
        else:
            (base / "state").mkdir()
            fill_store(base / "state", ips)
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
    bench.results["throughput"] = {"rows": rows, "iptables_restore_s": load}
    print(f"\n== 4. legitimate small-packet traffic from a third host (not banned), {bench.args.seconds:g} s runs "
          f"x {bench.args.reps}")
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


def _mac(host: Host) -> str:
    return str(json.loads(host.run(["ip", "-j", "link", "show", "dev", host.iface]).stdout)[0]["address"])


def _udp_counters(host: Host) -> int:
    lines = host.run(["cat", "/proc/net/snmp"]).stdout.splitlines()
    udp = [line.split()[1:] for line in lines if line.startswith("Udp:")]
    d = dict(zip(udp[0], map(int, udp[1]), strict=True))
    return d["InDatagrams"] + d["RcvbufErrors"]


def _udp(lab: Lab, third: Host, conf: Path, secs: float) -> dict[str, float]:
    c0 = _udp_counters(lab.victim)
    t0 = time.monotonic()
    third.run(["timeout", str(secs), "taskset", "-c", "0", "trafgen", "-o", third.iface, "-c", str(conf),
               "-n", str(int(secs * 3_000_000)), "-P", "1", "--no-sock-mem", "-q"], check=False,
              timeout=secs + 30)
    elapsed = time.monotonic() - t0
    time.sleep(0.2)
    return {"udp_pps": (_udp_counters(lab.victim) - c0) / elapsed}


def _ping(lab: Lab, third: Host, seconds: float) -> dict[str, float]:
    secs = int(seconds)
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
