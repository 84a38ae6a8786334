"""A scanner that comes back is banned again (issue 9 §3), end to end in the lab: real nmap and raw SYNs, the
detector and responder in the victim namespace, bans checked in its nft set, the private journald.

Each case uses fresh source addresses of the attacker (``Lab.aliases``) in one module-scoped lab.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.lab.detector import ROOT, DetectorProcess, nmap, python_in, tool
from tests.lab.netns import Host, Lab, LabError
from tests.lab.pipeline import ResponderProcess, detector_for, make_config

pytestmark = pytest.mark.lab

EVENTS = ("scan", "ban", "unban")


def _jail(base: Path, bantime: str, name: str = "portsentinel", set_name: str = "scan") -> str:
    return (f"[DEFAULT]\nlogpath = {base}/alerts.jsonl\nbantime = {bantime}\nbantime.increment = false\n"
            f"maxbans_per_minute = 0\n[{name}]\nenabled = true\nfilter = portsentinel\n"
            f"action = nftables[name={set_name}]\n")


def _journal(since: float, *match: str) -> list[dict[str, Any]]:
    out = subprocess.run(["journalctl", "--no-pager", "-o", "json", f"--since=@{int(since) - 1}", *match],
                         capture_output=True, text=True, check=True, timeout=60)
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


def _story(recs: list[dict[str, Any]], src: str) -> list[str]:
    """The scan, ban and unban records of ``src``, in the order they were decided (PS_TIME)."""
    mine = [r for r in recs if r.get("PS_SRC") == src and r.get("PS_EVENT") in EVENTS and "PS_TIME" in r]
    return [r["PS_EVENT"] for r in sorted(mine, key=lambda r: float(r["PS_TIME"]))]


def _wait_story(read: Any, src: str, want: list[str], timeout: float = 15) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        story = _story(read(), src)
        if story[:len(want)] == want or time.monotonic() > deadline:
            return story
        time.sleep(0.1)


def _in_set(host: Host, src: str) -> bool:
    """``src`` is covered by an element of the jail's nft sets: the address in ``scan_v4``/``scan_v6``, or the
    network banned for it in ``scan_v4net``/``scan_v6net`` (actions.d/nftables.conf)."""
    fam = "v6" if ":" in src else "v4"
    return any(host.run(["nft", "get", "element", "inet", "portsentinel", name, f"{{ {src} }}"],
                        check=False).returncode == 0 for name in (f"scan_{fam}", f"scan_{fam}net"))


def _all_records(det: DetectorProcess, resp: ResponderProcess, since: float) -> list[dict[str, Any]]:
    if det.output == "journal":
        return _journal(since, "SYSLOG_IDENTIFIER=portsentinel-detector") + resp.records()
    return det.records() + resp.records()


# ----------------------------------------------------------------------------- unban, then rescan

@pytest.mark.parametrize("backend", ["pyinotify", "systemd"])
def test_rescan_after_unban_is_banned_again(mlab: Lab, tmp_path: Path, backend: str, journald: str) -> None:
    """`portsentinel unban ADDR`, the same source rescans 2 s later: banned again; the journal tells the story."""
    (a4, a6), = mlab.aliases(mlab.attacker, 1)
    src, target = (a4, mlab.victim.addr4) if backend == "pyinotify" else (a6, mlab.victim.addr6)
    cfg = make_config(tmp_path, _jail(tmp_path, "1h"))
    since = time.time()
    output = "jsonl" if backend == "pyinotify" else "journal"
    with detector_for(mlab.victim, tmp_path, "stcp", output=output) as det, \
            ResponderProcess(mlab.victim, tmp_path, cfg, backend=backend) as resp:
        nmap(mlab.attacker, "-sS", target, "1,11", source=src)
        assert _wait_story(lambda: _all_records(det, resp, since), src, ["scan", "ban"]) == ["scan", "ban"], \
            resp.stderr()
        assert _in_set(mlab.victim, src)
        out = subprocess.run([tool("portsentinel"), "--socket", resp.socket, "unban", src], capture_output=True,
                             text=True, timeout=30)
        assert out.returncode == 0 and out.stdout.startswith("unbanned "), out.stderr  # (v6: its network)
        assert not _in_set(mlab.victim, src)
        time.sleep(2)
        nmap(mlab.attacker, "-sS", target, "1,11", source=src)
        want = ["scan", "ban", "unban", "scan", "ban"]
        assert _wait_story(lambda: _all_records(det, resp, since), src, want) == want
        assert _in_set(mlab.victim, src)
        assert resp.stop() == 0
        assert det.stop() == 0
    if backend == "systemd":  # the audit trail, as an admin asks for it: journalctl PS_SRC=…
        recs = _journal(since, f"PS_SRC={src}")
        assert [r["PS_EVENT"] for r in recs if r["PS_EVENT"] in EVENTS] == want


# ----------------------------------------------------------------------------- probing through a short ban

PROBER = """
import socket, sys, time
sys.path.insert(0, {bench!r})
from responder_probe import syn
tx = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
for i in range({count}):
    tx.sendto(syn({src!r}, {dst!r}, 40000 + i, {port}, i), ({dst!r}, 0))
    print(time.time(), flush=True)
    if i + 1 < {count}:
        time.sleep({every})
"""


@pytest.mark.parametrize("backend", ["pyinotify", "systemd"])
def test_scanner_probing_through_a_short_ban_is_banned_again(mlab: Lab, tmp_path: Path, backend: str,
                                                              journald: str) -> None:
    """A SYN to a watched port every 2 s, through a 3 s ban (nft drops them, the capture still sees them) and
    past its expiry: the first probe after the expiry is a new scan, and the source is banned again."""
    (src, _), = mlab.aliases(mlab.attacker, 1)
    cfg = make_config(tmp_path, _jail(tmp_path, "3"))
    since = time.time()
    output = "jsonl" if backend == "pyinotify" else "journal"
    with detector_for(mlab.victim, tmp_path, "stcp", output=output) as det, \
            ResponderProcess(mlab.victim, tmp_path, cfg, backend=backend) as resp:
        sent = python_in(mlab.attacker, PROBER.format(bench=str(ROOT / "bench"), count=4, src=src,
                                                      dst=mlab.victim.addr4, port=1, every=2.0), timeout=30)
        probes = [float(x) for x in sent.split()]
        want = ["scan", "ban", "unban", "scan", "ban"]
        story = _wait_story(lambda: _all_records(det, resp, since), src, want)
        assert story[:5] == want, (story, resp.stderr())
        recs = _all_records(det, resp, since)
        unban = next(r for r in recs if r.get("PS_SRC") == src and r.get("PS_EVENT") == "unban")
        assert unban["PS_DETAIL"] == "expired"
        scans = sorted(float(r["PS_TIME"]) for r in recs if r.get("PS_SRC") == src and r.get("PS_EVENT") == "scan")
        # The second scan record is the first probe after the expiry (probe 3 at ~4 s), not a quiet window later.
        assert scans[1] > float(unban["PS_TIME"]) and scans[1] < probes[3]
        # What the source sent while banned is in the final summary of the first episode.
        rearmed = [r for r in recs if r.get("PS_SRC") == src and r.get("PS_DETAIL") == "rearmed"]
        assert rearmed and int(rearmed[0]["PS_HITS"]) >= 2
        assert resp.stop() == 0
        assert det.stop() == 0


# ----------------------------------------------------------------------------- one record per decision

def test_full_port_scan_is_still_a_handful_of_records(mlab: Lab, tmp_path: Path, journald: str) -> None:
    """A 65,535-port scan against the whole pipeline (the source banned after its first probe, re-arm on):
    at most 10 detector records; after an unban, one final summary and nothing else until it probes again."""
    (src, _), = mlab.aliases(mlab.attacker, 1)
    cfg = make_config(tmp_path, _jail(tmp_path, "1h"))
    conf = tmp_path / "d.conf"
    conf.write_text("[detector]\nadvanced_tcp = 65535\nadvanced_exclude_tcp = \nsummary_interval = 5\n")
    det = detector_for(mlab.victim, tmp_path, "atcp")
    det.argv += ["--config", str(conf), "--interface", mlab.victim.iface, "--mode", "atcp"]
    with det, ResponderProcess(mlab.victim, tmp_path, cfg) as resp:
        nmap(mlab.attacker, "-sS", mlab.victim.addr4, "1-65535", source=src,
             extra=["-T5", "--min-rate", "20000", "--max-retries", "0"])
        assert resp.wait_for(lambda r: r.get("PS_EVENT") == "ban" and r.get("PS_SRC") == src)
        assert resp.ask("unban", src)["ok"]
        assert det.wait_for(lambda r: r.get("PS_SRC") == src and r.get("PS_DETAIL") == "rearmed")
        time.sleep(1.5)
        assert det.stop() == 0
        assert resp.stop() == 0
    recs = [r for r in det.records() if r.get("PS_SRC") == src]
    assert 1 <= len(recs) <= 10, [r["MESSAGE"] for r in recs]
    assert [r["PS_EVENT"] for r in recs].count("scan") == 1
    assert max(int(r["PS_HITS"]) for r in recs) >= 65_000


# ----------------------------------------------------------------------------- portsentinel run

def test_portsentinel_run_takes_every_path(mlab: Lab, tmp_path: Path, journald: str) -> None:
    """`portsentinel run` with all its paths in a test directory (nothing under /run or /var): two pipelines side
    by side, and the returning scanner banned again through it."""
    (src, _), = mlab.aliases(mlab.attacker, 1)
    runs = []
    try:
        for name in ("one", "two"):
            base = tmp_path / name
            base.mkdir()
            cfg = make_config(base, _jail(base, "1h", name=f"ps-{name}", set_name=name))
            argv = [tool("portsentinel"), "run", "--socket", str(base / "ctl.sock"), "--mode", "stcp",
                    "--output", "jsonl", "--jsonl", str(base / "alerts.jsonl"), "--config-dir", str(cfg),
                    "--state-dir", str(base / "state"), "--backend", "pyinotify",
                    "--decisions", str(base / "decisions.jsonl"), "--wake", str(base / "wake.sock"),
                    "--rearm", str(base / "rearm.sock")]
            with open(base / "run.stderr", "wb") as err:
                runs.append((base, mlab.victim.popen(argv, stdout=subprocess.DEVNULL, stderr=err)))
        for base, proc in runs:
            _wait_ready(base, proc)
        base, proc = runs[0]
        nmap(mlab.attacker, "-sS", mlab.victim.addr4, "1,11", source=src)
        for b, _ in runs:  # both pipelines saw it: each bans in its own set
            assert _wait_story(lambda b=b: _run_records(b), src, ["scan", "ban"]) == ["scan", "ban"], \
                (b / "run.stderr").read_text()
        for b, _ in runs:
            subprocess.run([tool("portsentinel"), "--socket", str(b / "ctl.sock"), "unban", src], check=True,
                           capture_output=True, timeout=30)
        time.sleep(2)
        nmap(mlab.attacker, "-sS", mlab.victim.addr4, "1,11", source=src)
        want = ["scan", "ban", "unban", "scan", "ban"]
        for b, _ in runs:
            assert _wait_story(lambda b=b: _run_records(b), src, want) == want
    finally:
        for _, proc in runs:
            proc.send_signal(signal.SIGTERM)
        for _, proc in runs:
            assert proc.wait(30) == 0


def _run_records(base: Path) -> list[dict[str, Any]]:
    """One pipeline's records: the detector's file, and its responder's decisions (its jail is ps-<dir name>)."""
    out = [json.loads(line) for line in (base / "alerts.jsonl").read_text().splitlines() if line.strip()]
    decisions = base / "decisions.jsonl"
    if decisions.exists():
        out += [json.loads(line) for line in decisions.read_text().splitlines() if line.strip()]
    else:  # decisions go to the journal when one runs
        out += _journal(time.time() - 120, "SYSLOG_IDENTIFIER=portsentinel-responder", f"PS_JAIL=ps-{base.name}")
    return out


def _wait_ready(base: Path, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            assert proc.stderr is not None
            raise LabError(f"portsentinel run exited {proc.returncode}: {proc.stderr.read().decode()[-2000:]}")
        ok = subprocess.run([tool("portsentinel"), "--socket", str(base / "ctl.sock"), "status"],
                            capture_output=True, timeout=30).returncode == 0
        if ok and (base / "rearm.sock").exists() and (base / "alerts.jsonl").exists():
            return
        time.sleep(0.1)
    raise LabError(f"portsentinel run did not come up: {(base / 'run.stderr').read_text()[-2000:]}")


# ----------------------------------------------------------------------------- legitimate clients

VICTIM_SERVER = """
import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 80))
s.listen(16)
print("ready", flush=True)
while True:
    c, _ = s.accept()
    c.recv(64)
    c.sendall(b"hello")
    c.close()
"""

# From the attacker namespace: a client of the victim's service (fixed source port), a peer whose own service the
# victim uses; after each connection ended, the peer's FIN/ACK arrives again, late (a retransmission or a delayed
# duplicate), at a socket that is gone.
CLIENTS = """
import socket, sys, time
from scapy.layers.inet import IP, TCP
from scapy.sendrecv import send
client, peer, victim = sys.argv[1:4]
for i in range(5):
    c = socket.socket()
    c.bind((client, 40100 + i))
    c.connect((victim, 80))
    c.sendall(b"hi")
    assert c.recv(16) == b"hello"
    c.close()
    time.sleep(0.2)
    for _ in range(3):  # the client's FIN/ACK again, after the server's side is gone
        send(IP(src=client, dst=victim) / TCP(sport=40100 + i, dport=80, flags="FA", seq=1000, ack=2000), verbose=0)
print("ok", flush=True)
"""


@pytest.mark.parametrize("bound", [1024, 65535])
def test_legitimate_clients_are_never_banned(mlab: Lab, tmp_path: Path, bound: int) -> None:
    """While a scanner is banned, unbanned and banned again (re-arm at work), clients of a real service in the
    watched range, and peers of the host's own outgoing connections, with late FIN/ACK retransmissions after the
    connections ended, are never reported and never banned: also when the advanced sentry watches every port,
    the host's ephemeral ones included (a late FIN/ACK there is the end of its own connection)."""
    (client, _), (peer, _), (scanner, _) = mlab.aliases(mlab.attacker, 3)
    srv = mlab.victim.popen([tool("python"), "-c", VICTIM_SERVER], stdout=subprocess.PIPE)
    assert srv.stdout is not None and srv.stdout.readline().strip() == b"ready"
    peer_srv = mlab.attacker.popen([tool("python"), "-c", VICTIM_SERVER.replace('"0.0.0.0", 80', f'"{peer}", 8081')],
                                   stdout=subprocess.PIPE)
    assert peer_srv.stdout is not None and peer_srv.stdout.readline().strip() == b"ready"
    try:
        _legit(mlab, tmp_path, bound, client, peer, scanner)
    finally:
        for proc in (srv, peer_srv):
            proc.terminate()
            proc.wait(10)


def _legit(mlab: Lab, tmp_path: Path, bound: int, client: str, peer: str, scanner: str) -> None:
    cfg = make_config(tmp_path, _jail(tmp_path, "1h"))
    conf = tmp_path / "d.conf"
    conf.write_text(f"[detector]\nadvanced_tcp = {bound}\n")
    det = detector_for(mlab.victim, tmp_path, "atcp")
    det.argv += ["--config", str(conf), "--mode", "atcp"]
    with det, ResponderProcess(mlab.victim, tmp_path, cfg) as resp:
        nmap(mlab.attacker, "-sS", mlab.victim.addr4, "1,11", source=scanner)
        assert resp.wait_for(lambda r: r.get("PS_EVENT") == "ban" and r.get("PS_SRC") == scanner), resp.stderr()
        assert resp.ask("unban", scanner)["ok"]
        assert python_in(mlab.attacker, CLIENTS.replace("sys.argv[1:4]", repr([client, peer, mlab.victim.addr4])),
                         timeout=60).strip() == "ok"
        # The victim as a client: the peer closes first, then its FIN/ACK comes again to the closed port.
        got = python_in(mlab.victim, f"""
import socket
ports = []
for _ in range(3):
    c = socket.create_connection(("{peer}", 8081), timeout=5)
    ports.append(c.getsockname()[1])
    c.sendall(b"hi")
    assert c.recv(16) == b"hello"
    c.close()
print(" ".join(map(str, ports)))
""")
        late = ("import sys\nfrom scapy.layers.inet import IP, TCP\nfrom scapy.sendrecv import send\n"
                f"for p in sys.argv[1:] or {got.split()!r}:\n"
                f"    send(IP(src={peer!r}, dst={mlab.victim.addr4!r}) / TCP(sport=8081, dport=int(p), flags='FA',"
                " seq=5000, ack=6000), count=3, verbose=0)\nprint('ok')\n")
        assert python_in(mlab.attacker, late).strip() == "ok"
        nmap(mlab.attacker, "-sS", mlab.victim.addr4, "1,11", source=scanner)  # the scanner again: banned again
        assert _wait_story(lambda: det.records() + resp.records(), scanner,
                           ["scan", "ban", "unban", "scan", "ban"]) == ["scan", "ban", "unban", "scan", "ban"]
        time.sleep(1.0)
        mine = [r for r in det.records() + resp.records() if r.get("PS_SRC") in (client, peer)]
        assert mine == [], mine
        assert resp.stop() == 0
        assert det.stop() == 0
