"""The detector's behaviour in the lab: what it must not report, journald end to end, configs, bad input."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import stock_file
from tests.lab.detector import DetectorProcess, nmap, python_in, tool
from tests.lab.netns import Lab

pytestmark = pytest.mark.lab

SERVER = """
import socket, sys, time
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("::", int(sys.argv[1])))
s.listen(16)
print("ready", flush=True)
s.settimeout(60)
while True:
    c, _ = s.accept()
    c.sendall(b"hello\\n")
    c.close()
"""

CLIENT = """
import socket, sys
for target in sys.argv[2:]:
    with socket.create_connection((target, int(sys.argv[1])), timeout=5) as c:
        assert c.recv(16) == b"hello\\n"
print("ok")
"""


def _server(lab: Lab, port: int) -> subprocess.Popen[bytes]:
    proc = lab.victim.popen([str(Path(tool("python"))), "-c", SERVER, str(port)], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == b"ready"
    return proc


def _connect(lab: Lab, port: int) -> None:
    out = lab.attacker.run([tool("python"), "-c", CLIENT, str(port), lab.victim.addr4, lab.victim.addr6])
    assert out.stdout.strip() == "ok"


def _scans(det: DetectorProcess) -> list[dict[str, str]]:
    return [r for r in det.records() if r.get("PS_EVENT") == "scan"]


def test_legitimate_clients_are_not_reported(lab: Lab, tmp_path: Path) -> None:
    """A real service in the advanced range, one started before and one after the detector: no record."""
    _server(lab, 80)
    with DetectorProcess(lab.victim, tmp_path / "a.jsonl", modes="atcp,audp") as det:
        _connect(lab, 80)
        _server(lab, 443)  # appears after start: must be noticed at once
        _connect(lab, 443)
        time.sleep(0.5)
        assert _scans(det) == []
        # The sentry is alive all the same: a probe to a closed port is reported.
        nmap(lab.attacker, "-sS", lab.victim.addr4, "81")
        assert det.wait_for(lambda r: r.get("PS_EVENT") == "scan" and r.get("PS_PORT") == "81")
        assert det.stop() == 0


def test_advanced_mode_skips_ports_with_listeners(lab: Lab, tmp_path: Path) -> None:
    _server(lab, 22)
    with DetectorProcess(lab.victim, tmp_path / "a.jsonl", modes="atcp") as det:
        nmap(lab.attacker, "-sS", lab.victim.addr4, "22")
        time.sleep(0.5)
        assert _scans(det) == []
        listen = [r for r in det.records() if r.get("PS_EVENT") == "listen"]
        assert "not watched now: 22" in listen[0]["MESSAGE"]
        assert det.stop() == 0


def test_ignored_source_is_not_reported(lab: Lab, tmp_path: Path) -> None:
    (ignored4, ignored6), (seen4, _) = lab.aliases(lab.attacker, 2)
    conf = tmp_path / "detector.conf"
    conf.write_text(f"[detector]\nmodes = stcp\nignore = 127.0.0.0/8, ::1, {ignored4}/32, {ignored6}/128\n")
    with DetectorProcess(lab.victim, tmp_path / "a.jsonl", config=conf) as det:
        nmap(lab.attacker, "-sS", lab.victim.addr4, "1,11", source=ignored4)
        nmap(lab.attacker, "-sS", lab.victim.addr6, "1,11", source=ignored6)
        nmap(lab.attacker, "-sS", lab.victim.addr4, "1,11", source=seen4)
        assert det.wait_for(lambda r: r.get("PS_SRC") == seen4)
        assert {r["PS_SRC"] for r in _scans(det)} == {seen4}
        assert det.stop() == 0


def test_journald_end_to_end_full_range(lab: Lab, tmp_path: Path, journald: str) -> None:
    """Records land in the (private) journald, queryable by field; a 65,535-port scan is ≤ 10 records."""
    (src4, _), = lab.aliases(lab.attacker, 1)
    det = DetectorProcess(lab.victim, tmp_path / "unused.jsonl", modes="atcp",
                          output="journal", extra=["--interface", lab.victim.iface])
    conf = tmp_path / "d.conf"
    conf.write_text("[detector]\nadvanced_tcp = 65535\nadvanced_exclude_tcp = \nsummary_interval = 5\n")
    det.argv += ["--config", str(conf)]
    with det:
        nmap(lab.attacker, "-sS", lab.victim.addr4, "1-65535", source=src4, extra=["-T5", "--min-rate", "20000"])
        time.sleep(1.5)
        assert det.stop() == 0

    def query(*match: str) -> list[dict[str, str]]:
        out = subprocess.run(["journalctl", "--no-pager", "-o", "json", "SYSLOG_IDENTIFIER=portsentinel-detector",
                              *match], capture_output=True, text=True, check=True)
        return [json.loads(line) for line in out.stdout.splitlines()]

    recs = query(f"PS_SRC={src4}")
    assert recs, "nothing in the journal"
    assert 1 <= len(recs) <= 10, [r["MESSAGE"] for r in recs]
    scan = [r for r in recs if r["PS_EVENT"] == "scan"]
    assert len(scan) == 1
    assert scan[0]["PS_SCAN"] == "syn" and scan[0]["PS_MODE"] == "atcp"
    assert scan[0]["MESSAGE_ID"] and scan[0]["PRIORITY"] == "4"
    total = max(int(r["PS_HITS"]) for r in recs)
    assert total >= 65_000, total
    stop = query("PS_EVENT=stop")[-1]
    assert "drops=" in stop["PS_DETAIL"]


def test_stock_portsentry_conf_runs(lab: Lab, tmp_path: Path) -> None:
    stock = stock_file("portsentry", "etc/portsentry/portsentry.conf")
    check = subprocess.run([tool("portsentinel-detector"), "--config", str(stock), "--check"],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    assert "KILL_ROUTE" in check.stdout + check.stderr
    with DetectorProcess(lab.victim, tmp_path / "a.jsonl", config=stock, modes="stcp,sudp") as det:
        nmap(lab.attacker, "-sX", lab.victim.addr4, "31337")
        rec = det.wait_for(lambda r: r.get("PS_EVENT") == "scan")
        assert rec and rec[0]["PS_PORT"] == "31337" and rec[0]["PS_SCAN"] == "xmas"
        assert det.stop() == 0


@pytest.mark.parametrize("text,where", [
    ("[detector]\ntcp_ports = 1, 70000\n", ":2: tcp_ports:"),
    ("[detector]\nmodes = stcp\nbogus = 1\n", ":3: bogus:"),
    ("[detector]\nignore = 10.0.0.300\n", ":2: ignore:"),
    ('TCP_PORTS="1,2"\nSCAN_TRIGGER="x"\n', ":2: SCAN_TRIGGER:"),
    ('TCP_PORTS="1,2"\nNOT_A_KEY="1"\n', ":2: NOT_A_KEY:"),
])
def test_broken_config_names_file_line_key(tmp_path: Path, text: str, where: str) -> None:
    conf = tmp_path / "broken.conf"
    conf.write_text(text)
    for extra in (["--check"], []):
        proc = subprocess.run([tool("portsentinel-detector"), "--config", str(conf), *extra],
                              capture_output=True, text=True, timeout=30)
        assert proc.returncode != 0
        assert f"{conf}{where}" in proc.stderr, proc.stderr


def test_bad_packets_are_counted_and_skipped(lab: Lab, tmp_path: Path) -> None:
    """Crafted with scapy: truncated headers, IPv6 extension headers, fragments, odd flags."""
    (src4, src6), = lab.aliases(lab.attacker, 1)
    v4, v6 = lab.victim.addr4, lab.victim.addr6
    code = f"""
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrHopByHop, IPv6ExtHdrDestOpt, IPv6ExtHdrFragment
from scapy.packet import Raw
from scapy.sendrecv import send
pk = []
pk.append(IP(src="{src4}", dst="{v4}", proto=6) / Raw(bytes(TCP(dport=1, flags="S"))[:10]))   # truncated TCP
pk.append(IP(src="{src4}", dst="{v4}", flags="MF", frag=0) / TCP(dport=11, flags="S"))          # first fragment
pk.append(IP(src="{src4}", dst="{v4}", frag=3, proto=6) / Raw(b"x" * 24))                       # later fragment
pk.append(IPv6(src="{src6}", dst="{v6}") / IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt() / TCP(dport=1, flags="S"))
pk.append(IPv6(src="{src6}", dst="{v6}") / IPv6ExtHdrFragment(offset=5, m=0, nh=6) / Raw(b"y" * 16))
pk.append(IP(src="{src4}", dst="{v4}") / TCP(dport=15, flags="SF"))                             # odd flags
pk.append(IP(src="{src4}", dst="{v4}", ihl=15) / Raw(b"z" * 8))                                 # bad IHL
send(pk, verbose=0)
"""
    with DetectorProcess(lab.victim, tmp_path / "a.jsonl", modes="stcp", extra=["--interface", "vic0"]) as det:
        python_in(lab.attacker, code)
        # The v6 probe behind two extension headers is still seen and classified.
        v6rec = det.wait_for(lambda r: r.get("PS_SRC") == src6)
        assert v6rec and v6rec[0]["PS_SCAN"] == "syn" and v6rec[0]["PS_PORT"] == "1"
        v4rec = det.wait_for(lambda r: r.get("PS_SRC") == src4)
        assert v4rec and v4rec[0]["PS_PORT"] in ("11", "15")
        assert det.proc is not None and det.proc.poll() is None  # still running
        assert det.stop() == 0
    stop = [r for r in det.records() if r.get("PS_EVENT") == "stop"][0]
    assert "bad_truncated=1" in stop["PS_DETAIL"], stop


def test_sighup_reload_keeps_old_config_on_error(lab: Lab, tmp_path: Path) -> None:
    conf = tmp_path / "d.conf"
    conf.write_text("[detector]\nmodes = stcp\ntcp_ports = 1\n")
    (a4, _), (b4, _), (c4, _) = lab.aliases(lab.attacker, 3)
    with DetectorProcess(lab.victim, tmp_path / "a.jsonl", config=conf) as det:
        conf.write_text("[detector]\nmodes = stcp\ntcp_ports = 1, 2\n")
        det.signal(signal.SIGHUP)
        assert det.wait_for(lambda r: r.get("PS_DETAIL") == "reloaded")
        nmap(lab.attacker, "-sS", lab.victim.addr4, "2", source=a4)
        assert det.wait_for(lambda r: r.get("PS_SRC") == a4)
        conf.write_text("[detector]\nmodes = stcp\ntcp_ports = 99999\n")
        det.signal(signal.SIGHUP)
        assert det.wait_for(lambda r: r.get("PS_DETAIL") == "reload-failed")
        nmap(lab.attacker, "-sS", lab.victim.addr4, "2", source=b4)  # the old configuration still runs
        assert det.wait_for(lambda r: r.get("PS_SRC") == b4)
        nmap(lab.attacker, "-sS", lab.victim.addr4, "3", source=c4)
        time.sleep(0.3)
        assert not [r for r in det.records() if r.get("PS_SRC") == c4]
        assert det.stop() == 0


def test_tcp_mode_banner_and_record_file_mode(lab: Lab, tmp_path: Path) -> None:
    """PORT_BANNER is written to a connecting client; the JSON-lines file is created 0640; a port another
    program holds is reported and skipped, not fatal."""
    import os
    import stat

    _server(lab, 11)  # holds TCP 11 before the detector starts
    conf = tmp_path / "d.conf"
    conf.write_text('[detector]\nmodes = tcp\ntcp_ports = 1, 11\nport_banner = "** UNAUTHORIZED ACCESS **"\n')
    code = ("import socket,sys\nc=socket.create_connection((sys.argv[1],1),timeout=5)\n"
            "print(c.recv(64).decode())")
    with DetectorProcess(lab.victim, tmp_path / "a.jsonl", config=conf) as det:
        out = lab.attacker.run([tool("python"), "-c", code, lab.victim.addr4]).stdout
        assert out.strip() == "** UNAUTHORIZED ACCESS **"
        assert det.wait_for(lambda r: r.get("PS_EVENT") == "scan" and r.get("PS_SCAN") == "connect")
        listen = [r for r in det.records() if r.get("PS_EVENT") == "listen"]
        assert "not watched now: 11" in listen[0]["MESSAGE"]
        assert det.stop() == 0
    assert stat.S_IMODE(os.stat(tmp_path / "a.jsonl").st_mode) == 0o640
