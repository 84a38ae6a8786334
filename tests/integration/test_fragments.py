"""Fragmented probes against the real kernel (issue 9 §1): nmap -f/-ff/--mtu, IPv6 fragments from scapy,
overlapping and inconsistent fragments judged as the victim's own stack judged them, and a bounded flood."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.lab.detector import DetectorProcess, nmap, tool
from tests.lab.netns import Lab

pytestmark = pytest.mark.lab

CONF = """\
[detector]
modes = stcp,sudp,atcp,audp
interface = {iface}
tcp_ports = 1, 11, 15, 4444, 4445
udp_ports = 7, 9
summary_interval = 300
# one source per address: each case below comes from its own address, all in the lab's one /64
ipv6_prefix = 128
"""


@pytest.fixture(scope="module")
def det(mlab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DetectorProcess]:
    work = tmp_path_factory.mktemp("frag")
    conf = work / "d.conf"
    conf.write_text(CONF.format(iface=mlab.victim.iface))
    with DetectorProcess(mlab.victim, work / "alerts.jsonl", config=conf) as d:
        yield d


def _script(lab: Lab, code: str, *args: str) -> Any:
    """A scapy script in the attacker namespace; its last output line is JSON."""
    out = lab.attacker.run(["timeout", "90", tool("python"), "-c", code, *args], timeout=100).stdout
    return json.loads(out.strip().splitlines()[-1])


def _scans(det: DetectorProcess, src: str) -> list[dict[str, Any]]:
    return [r for r in det.records() if r.get("PS_EVENT") == "scan" and r.get("PS_SRC") == src]


# nmap's fragmenting options with scan types that take them (v4: nmap 7.93 refuses -6 with -f/--mtu).
NMAP_CASES = [
    ("-sS", ["-f"], "1,11", "syn", "tcp", "stcp"),
    ("-sS", ["-ff"], "1,11", "syn", "tcp", "stcp"),
    ("-sS", ["--mtu", "16"], "1,11", "syn", "tcp", "stcp"),
    ("-sF", ["-f"], "1,11", "fin", "tcp", "stcp"),
    ("-sX", ["-f"], "1,11", "xmas", "tcp", "stcp"),
    ("-sN", ["-ff"], "1,11", "null", "tcp", "stcp"),
    ("-sA", ["-f"], "1,11", "ack", "tcp", "stcp"),
    ("-sS", ["-f"], "200,201", "syn", "tcp", "atcp"),
    ("-sM", ["--mtu", "8"], "202,203", "maimon", "tcp", "atcp"),
]
# (nmap: "Fragscan only works with TCP ... scan types": fragmented UDP comes from scapy below.)


@pytest.mark.parametrize("flag,frag,ports,scan,proto,mode", NMAP_CASES,
                         ids=[f"{c[0]}{''.join(c[1])}-{c[5]}" for c in NMAP_CASES])
def test_nmap_fragmented_scans(mlab: Lab, det: DetectorProcess, flag: str, frag: list[str], ports: str,
                               scan: str, proto: str, mode: str) -> None:
    (src, _), = mlab.aliases(mlab.attacker, 1)
    nmap(mlab.attacker, flag, mlab.victim.addr4, ports, source=src, extra=[*frag, "-T5"])
    got = det.wait_for(lambda r: r.get("PS_EVENT") == "scan" and r.get("PS_SRC") == src)
    assert got, f"{flag} {' '.join(frag)} not seen; {det.stderr()}"
    rec = got[0]
    assert (rec["PS_SCAN"], rec["PS_PROTO"], rec["PS_MODE"]) == (scan, proto, mode), rec
    assert rec["PS_PORT"] in ports.split(","), rec


TWO_FRAGMENTS = """
import json, sys, time
from scapy.layers.inet import IP, TCP, UDP, ICMP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrFragment, ICMPv6ParamProblem, ICMPv6DestUnreach
from scapy.packet import Raw
from scapy.sendrecv import AsyncSniffer, send
V4, V6 = sys.argv[1], sys.argv[2]
cases = json.loads(sys.argv[3])  # [src, l4, dport, flags, first fragment's payload bytes]
seen = {}
def note(p):
    ip = p[IP] if IP in p else p[IPv6] if IPv6 in p else None
    if ip is None or ip.src not in (V4, V6):
        return
    if ICMPv6ParamProblem in p:
        seen.setdefault(ip.dst, []).append("pp%d" % p[ICMPv6ParamProblem].code)
    elif ICMP in p or ICMPv6DestUnreach in p:
        seen.setdefault(ip.dst, []).append("unreach")
    elif TCP in p:
        seen.setdefault(ip.dst, []).append("tcp")
sniff = AsyncSniffer(prn=note, store=False, filter="ip or ip6")
sniff.start()
time.sleep(0.5)
for ident, (src, l4, dport, flags, first) in enumerate(cases, 100):
    v6 = ":" in src
    net = (lambda **kw: IPv6(src=src, dst=V6, **kw)) if v6 else (lambda **kw: IP(src=src, dst=V4, **kw))
    hdr = TCP(sport=40000, dport=dport, flags=flags) if l4 == "tcp" else UDP(sport=40000, dport=dport)
    seg = bytes(net() / hdr / Raw(b"\\0" * 24))[40 if v6 else 20:]
    nh = 6 if l4 == "tcp" else 17
    if v6:
        frags = [net() / IPv6ExtHdrFragment(id=ident, nh=nh, offset=0, m=1) / Raw(seg[:first]),
                 net() / IPv6ExtHdrFragment(id=ident, nh=nh, offset=first // 8, m=0) / Raw(seg[first:])]
    else:
        frags = [net(id=ident, proto=nh, flags="MF") / Raw(seg[:first]),
                 net(id=ident, proto=nh, frag=first // 8) / Raw(seg[first:])]
    send(frags, verbose=0)
time.sleep(1.0)
sniff.stop()
print(json.dumps(seen))
"""


# (family, transport, port, TCP flags, bytes of transport in the first fragment, expected PS_SCAN, PS_MODE)
TWO_FRAGMENT_CASES = [
    (6, "tcp", 1, "S", 24, "syn", "stcp"), (6, "udp", 7, "", 8, "udp", "sudp"),
    (6, "tcp", 300, "F", 32, "fin", "atcp"), (6, "udp", 301, "", 16, "udp", "audp"),
    (6, "tcp", 11, "FPU", 8, None, None), (6, "tcp", 15, "S", 16, None, None),
    (4, "udp", 9, "", 8, "udp", "sudp"), (4, "udp", 302, "", 8, "udp", "audp"),
    (4, "tcp", 15, "FPU", 16, "xmas", "stcp"), (4, "tcp", 303, "", 8, "null", "atcp"),
]


def test_two_fragment_probes(mlab: Lab, det: DetectorProcess) -> None:
    """nmap refuses -6 -f and fragments no UDP: scapy sends two-fragment probes in every stealth mode, v4 and
    v6, some with the transport header split across the fragments. Linux drops an IPv6 first fragment without
    the whole transport header (RFC 8200, ICMPv6 parameter problem code 3): so must the verdict. In IPv4 a
    split header is legal and reassembled."""
    pairs = mlab.aliases(mlab.attacker, len(TWO_FRAGMENT_CASES))
    srcs = [a6 if case[0] == 6 else a4 for (a4, a6), case in zip(pairs, TWO_FRAGMENT_CASES, strict=True)]
    arg = json.dumps([[src, l4, port, flags, first] for src, (_, l4, port, flags, first, _, _)
                      in zip(srcs, TWO_FRAGMENT_CASES, strict=True)])
    seen = _script(mlab, TWO_FRAGMENTS, mlab.victim.addr4, mlab.victim.addr6, arg)
    time.sleep(0.5)
    for src, (_, l4, port, _, _, scan, mode) in zip(srcs, TWO_FRAGMENT_CASES, strict=True):
        recs = _scans(det, src)
        if scan is None:  # the host dropped the first fragment and said why; no probe reached a port
            assert recs == [], recs
            assert seen.get(src) == ["pp3"], (src, seen)
        else:
            assert len(recs) == 1, (src, det.records())
            assert (recs[0]["PS_SCAN"], recs[0]["PS_MODE"], recs[0]["PS_PORT"]) == (scan, mode, str(port))
            # The host answered the reassembled probe: RST from a closed TCP port, port unreachable for UDP.
            assert seen.get(src) == ["tcp" if l4 == "tcp" else "unreach"], (src, seen)


SHAPES_SCRIPT = """
import json, sys, time
from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrFragment
from scapy.packet import Raw
from scapy.sendrecv import AsyncSniffer, send
V4, V6 = sys.argv[1], sys.argv[2]
cases = json.loads(sys.argv[3])
answers = {}
def note(p):
    ip = p[IP] if IP in p else p[IPv6] if IPv6 in p else None
    if ip is not None and TCP in p and ip.src in (V4, V6):
        answers.setdefault(ip.dst, []).append(p[TCP].sport)
sniff = AsyncSniffer(prn=note, store=False, filter="tcp")
sniff.start()
time.sleep(0.5)
for ident, (src, fam, plen, spec) in enumerate(cases, 1000):
    dst = V4 if fam == 4 else V6
    net = IP(src=src, dst=dst) if fam == 4 else IPv6(src=src, dst=dst)
    seg = bytes(net / TCP(sport=40000, dport=4444, flags="S", seq=1000) / Raw(b"\\0" * plen))[len(net):]
    alt = bytes(net / TCP(sport=40000, dport=4445, flags="F", seq=1000) / Raw(b"\\0" * plen))[len(net):]
    out = []
    for off, end, more, data, ecn in spec:
        body = {"seg": seg, "alt": alt, "pad": b"\\x55" * 64}[data][off:end]
        if fam == 4:
            out.append(IP(src=src, dst=dst, id=ident, proto=6, frag=off // 8, flags="MF" if more else 0, tos=ecn)
                       / Raw(body))
        else:
            out.append(IPv6(src=src, dst=dst, tc=ecn) / IPv6ExtHdrFragment(id=ident, nh=6, offset=off // 8,
                                                                          m=int(more)) / Raw(body))
    send(out, verbose=0)
    time.sleep(0.02)
time.sleep(1.0)
sniff.stop()
print(json.dumps(answers))
"""

# (family, TCP payload bytes, [(offset, end, MF, data, ECN)]): data "seg" is the probe (a SYN to 4444),
# "alt" a FIN to 4445 (also watched), "pad" filler. What the host does with each is what the test finds out.
SHAPES: list[tuple[str, int, int, list[tuple[int, int, bool, str, int]]]] = [
    ("v4 in order", 4, 4, [(0, 8, True, "seg", 0), (8, 24, False, "seg", 0)]),
    ("v4 last first", 4, 4, [(8, 24, False, "seg", 0), (0, 8, True, "seg", 0)]),
    ("v4 partial overlap", 4, 4, [(0, 16, True, "seg", 0), (8, 24, False, "seg", 0)]),
    ("v4 duplicate with other ports", 4, 4, [(0, 16, True, "seg", 0), (0, 8, True, "alt", 0),
                                             (16, 24, False, "seg", 0)]),
    ("v4 other ports first", 4, 4, [(0, 8, True, "alt", 0), (0, 16, True, "seg", 0), (16, 24, False, "seg", 0)]),
    ("v4 inside two runs", 4, 4, [(8, 16, True, "seg", 0), (0, 8, True, "seg", 0), (0, 16, True, "pad", 0),
                                  (16, 24, False, "seg", 0)]),
    ("v4 inside one run", 4, 4, [(0, 8, True, "seg", 0), (8, 16, True, "seg", 0), (0, 16, True, "pad", 0),
                                 (16, 24, False, "seg", 0)]),
    ("v4 two last fragments", 4, 4, [(16, 32, False, "pad", 0), (16, 24, False, "seg", 0),
                                     (0, 16, True, "seg", 0)]),
    ("v4 bad checksum", 4, 4, [(0, 16, True, "seg", 0), (16, 24, False, "pad", 0)]),
    ("v4 empty fragment", 4, 4, [(0, 8, True, "seg", 0), (8, 8, True, "seg", 0), (8, 24, False, "seg", 0)]),
    ("v4 ECN not-ECT with ECT", 4, 4, [(0, 8, True, "seg", 0), (8, 24, False, "seg", 2)]),
    ("v4 ECN ECT with CE", 4, 4, [(0, 8, True, "seg", 2), (8, 24, False, "seg", 3)]),
    ("v4 middle not a multiple of 8", 4, 4, [(0, 12, True, "seg", 0), (8, 24, False, "seg", 0)]),
    ("v4 data past the end", 4, 4, [(16, 24, False, "seg", 0), (0, 8, True, "seg", 0), (8, 32, True, "pad", 0)]),
    ("v4 duplicate last fixes length", 4, 4, [(0, 8, True, "seg", 0), (8, 16, True, "seg", 0),
                                              (8, 16, False, "seg", 0), (16, 24, False, "seg", 0)]),
    ("v6 in order", 6, 12, [(0, 24, True, "seg", 0), (24, 32, False, "seg", 0)]),
    ("v6 split TCP header", 6, 12, [(0, 8, True, "seg", 0), (8, 32, False, "seg", 0)]),
    ("v6 partial overlap", 6, 12, [(0, 24, True, "seg", 0), (16, 32, False, "seg", 0)]),
    ("v6 duplicate with other ports", 6, 12, [(0, 24, True, "seg", 0), (0, 24, True, "alt", 0),
                                              (24, 32, False, "seg", 0)]),
    ("v6 inside two runs", 6, 20, [(24, 32, True, "seg", 0), (0, 24, True, "seg", 0), (16, 32, True, "pad", 0),
                                   (32, 40, False, "seg", 0)]),
    ("v6 middle not a multiple of 8", 6, 12, [(0, 28, True, "seg", 0), (24, 32, False, "seg", 0)]),
    ("v6 two last fragments", 6, 12, [(24, 40, False, "pad", 0), (24, 32, False, "seg", 0),
                                      (0, 24, True, "seg", 0)]),
    ("v6 bad checksum", 6, 12, [(0, 24, True, "seg", 0), (24, 32, False, "pad", 0)]),
    ("v6 ECN not-ECT with ECT", 6, 12, [(0, 24, True, "seg", 0), (24, 32, False, "seg", 1)]),
]


def test_fragment_shapes_judged_as_the_host_judges_them(mlab: Lab, det: DetectorProcess) -> None:
    """Overlaps, duplicates, inconsistent lengths, ECN: the victim's own stack answers (RST from a closed port)
    exactly the datagrams the detector reports, with the same port."""
    pairs = mlab.aliases(mlab.attacker, len(SHAPES))
    cases = [[a4 if fam == 4 else a6, fam, plen, spec] for (a4, a6), (_, fam, plen, spec) in zip(pairs, SHAPES,
                                                                                                  strict=True)]
    answers = _script(mlab, SHAPES_SCRIPT, mlab.victim.addr4, mlab.victim.addr6, json.dumps(cases))
    time.sleep(0.5)
    verdicts = []
    for (name, *_), (src, *_) in zip(SHAPES, cases, strict=True):
        host = sorted(set(answers.get(src, [])))
        ours = sorted({int(r["PS_PORT"]) for r in _scans(det, str(src))})
        verdicts.append((name, host, ours))
    assert all(host == ours for _, host, ours in verdicts), [v for v in verdicts if v[1] != v[2]]
    answered = [name for name, host, _ in verdicts if host]
    assert 5 <= len(answered) <= len(SHAPES) - 5, verdicts  # both outcomes occur: the test can tell them apart


def test_stop_record_counts_fragments(det: DetectorProcess) -> None:
    """Runs after the others in this module: the detector's own counters saw fragments, not whole packets."""
    assert det.stop() == 0
    stop = [r for r in det.records() if r.get("PS_EVENT") == "stop"][-1]
    counts = dict(item.split("=", 1) for item in stop["PS_DETAIL"].split())
    # (the shapes test alone completes 7 datagrams, discards 5 for overlaps, drops 4 duplicates, 2 bad sums)
    assert int(counts["frag_datagrams"]) >= 7 and int(counts["frag_fragments"]) >= 60, counts
    assert int(counts["frag_overlaps"]) >= 5 and int(counts["frag_duplicates"]) >= 4, counts
    assert int(counts["frag_badsum"]) >= 2 and int(counts["frag_invalid"]) >= 5, counts
    assert "bad_truncated" not in counts, counts


FLOOD_CONF = """\
[detector]
modes = atcp
interface = {iface}
advanced_tcp = 65535
advanced_exclude_tcp =
summary_interval = 300
"""
FLOOD_FRAGMENTS, FLOOD_PPS, PROBES = 150_000, 20_000, 400


def _mac(lab: Lab, host: Any) -> str:
    return str(json.loads(host.run(["ip", "-j", "link", "show", "dev", host.iface]).stdout)[0]["address"])


def _rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:"))


def test_fragment_flood_is_bounded_and_loses_no_probe(mlab: Lab, tmp_path: Path) -> None:
    """150,000 random spoofed fragments (random source, identification and offset: each one a new queue) at
    20,000 pps, with 400 unfragmented SYNs from one source to 400 ports in the middle of it: RSS stays flat,
    the reassembly table is evicted and counted, no frame is dropped and every probe is counted.
    (bench/frag_bench.py runs 1,000,000 and measures.)"""
    (src, _), = mlab.aliases(mlab.attacker, 1)
    victim, attacker = mlab.victim, mlab.attacker
    frags, probes = tmp_path / "frags.cfg", tmp_path / "probes.cfg"
    eth = f"eth(da={_mac(mlab, victim)}, sa={_mac(mlab, attacker)}, type=0x0800)"
    frags.write_text(f"{{ {eth}, ipv4(sa=drnd(), da={victim.addr4}, id=drnd(), mf, frag=drnd(), prot=6, ttl=64),"
                     " drnd(16) }\n")
    probes.write_text(f"{{ {eth}, ipv4(sa={src}, da={victim.addr4}, ttl=64), "
                      "tcp(sp=40000, dp=dinc(2000, 2399), syn, win=1024) }\n")
    conf = tmp_path / "d.conf"
    conf.write_text(FLOOD_CONF.format(iface=victim.iface))
    # trafgen paces roughly (-b, through the qdisc: -q), a token bucket on the attacker's own interface smoothly.
    tg = ["trafgen", "-o", attacker.iface, "-P", "1", "--no-sock-mem", "-q", "-Q", "-C", "-b",
          f"{FLOOD_PPS * 11 // 10}pps"]
    attacker.run(["tc", "qdisc", "replace", "dev", attacker.iface, "root", "tbf", "rate",
                  f"{FLOOD_PPS * 50 * 8 * 106 // 100}bit", "burst", "5000", "latency", "2ms"])
    try:
        with DetectorProcess(victim, tmp_path / "a.jsonl", config=conf) as det, open(tmp_path / "tg.err", "wb") as err:
            assert det.proc is not None
            pid = det.proc.pid
            flood = attacker.popen(["timeout", "60", *tg, "-c", str(frags), "-n", str(FLOOD_FRAGMENTS)],
                                   stdout=subprocess.DEVNULL, stderr=err)
            rss = []
            t0 = time.monotonic()
            sent_probes = False
            while flood.poll() is None and time.monotonic() - t0 < 60:
                rss.append(_rss_kb(pid))
                if not sent_probes and time.monotonic() - t0 > 2:
                    attacker.run(["timeout", "30", *tg, "-c", str(probes), "-n", str(PROBES)], timeout=40)
                    sent_probes = True
                time.sleep(0.2)
            assert flood.returncode == 0 and sent_probes, (tmp_path / "tg.err").read_text()
            time.sleep(1.5)  # the detector drains its ring; a tick reads the kernel's drop counter
            rss.append(_rss_kb(pid))
            assert det.stop() == 0
    finally:
        attacker.run(["tc", "qdisc", "del", "dev", attacker.iface, "root"], check=False)
    stop = [r for r in det.records() if r.get("PS_EVENT") == "stop"][-1]
    counts = dict(item.split("=", 1) for item in stop["PS_DETAIL"].split())
    assert int(counts["drops"]) == 0, counts
    # (fed to the reassembler, or shed while the ring was over half full: a loaded machine's scheduler pauses)
    assert int(counts["frag_fragments"]) + int(counts["frag_shed"]) >= FLOOD_FRAGMENTS * 0.95, counts
    assert int(counts["frag_evicted"]) > 0 and int(counts["frag_datagrams"]) < 100, counts
    hits = max(int(r.get("PS_HITS", 0)) for r in det.records() if r.get("PS_SRC") == src)
    ports = max(int(r.get("PS_PORTS", 0)) for r in det.records() if r.get("PS_SRC") == src)
    assert (hits, ports) == (PROBES, PROBES), [r for r in det.records() if r.get("PS_SRC") == src]
    quarter = rss[len(rss) // 4]
    assert max(rss) - quarter < 8 * 1024, rss  # flat once the table is full (4 MiB cap, Python's own overhead)
