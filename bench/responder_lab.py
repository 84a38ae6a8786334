"""The responder benchmarks' lab helpers: jail and scan record, address ranges, a process's CPU time, figures,
the journal's and the nft set's contents, the victim's open port and the attacker's watch probe, a store full of
bans, and the machine line every benchmark prints. Shared by responder_bench, reban, bulk_bench, fleet_jail_bench.
"""

from __future__ import annotations

import ipaddress
import json
import os
import platform
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

from tests.lab.detector import VENV_BIN
from tests.lab.machine import cpu_model
from tests.lab.netns import Host, Lab
from tests.lab.nftset import set_elements
from tests.lab.pipeline import ResponderProcess

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
    return len(set_elements(host, set_name, table=table, missing_ok=True))


PROBE = str(ROOT / "bench" / "responder_probe.py")


def watch_begin(lab: Lab, ip: str, limit: float) -> subprocess.Popen[bytes]:
    """From the attacker, probe the victim's open port from ``ip`` (an address about to be banned) every
    millisecond; returns once a probe is answered. ``watch_end`` then says when probes stopped being answered."""
    lab.attacker.run(["ip", "addr", "replace", f"{ip}/32", "dev", lab.attacker.iface])
    lab.victim.run(["ip", "route", "replace", f"{ip}/32", "dev", lab.victim.iface])
    proc = lab.attacker.popen(["timeout", str(int(limit) + 5), PY, PROBE, "--victim", lab.victim.addr4,
                               "--open-port", str(OPEN_PORT), "--interval", "0.001", "--quiet", "0.25",
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


def fill_store(state: Path, ips: list[str]) -> None:
    """A responder store at ``state`` holding a ban of each of ``ips`` (two hours left)."""
    from portsentinel.responder.adapters.store import Store

    Store(str(state / "responder.sqlite3")).close()  # the responder's own schema
    db = sqlite3.connect(str(state / "responder.sqlite3"))
    now = time.time()
    info = json.dumps({"port": "1", "proto": "tcp", "scan": "syn"}, sort_keys=True)
    with db:
        db.executemany("INSERT OR REPLACE INTO bans VALUES (?,?,?,?,?,?,?)",
                       ((("portsentinel", ip, now, now + 7200, 1, 1, info)) for ip in ips))
    db.close()


def machine() -> str:
    model = cpu_model()
    nft = subprocess.run(["nft", "--version"], capture_output=True, text=True).stdout.strip()
    return (f"{platform.node()}: {os.cpu_count()} CPU ({model}), kernel {platform.release()}, {nft}, "
            f"python {platform.python_version()}")
