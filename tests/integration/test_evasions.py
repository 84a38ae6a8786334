"""nmap's evasion options and masscan against the stealth sentries, IPv4 and IPv6: each row of the README's
scan table that says "caught" is proved here (fragments: test_fragments.py; -sO/-sY/-sZ: their own tests).

One detector (stcp and sudp on PortSentry's lists) for the module; a fresh source address per case. The lab's
aliases share one /64, so this detector counts IPv6 sources per address (ipv6_prefix = 128); per-network counting
has its own tests (test_prefix_lab.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from tests.lab.detector import DetectorProcess, nmap, python_in
from tests.lab.netns import Lab

pytestmark = pytest.mark.lab

TCP_PORTS = "1,11,15,79"
UDP_PORTS = "1,7,9,69"


@pytest.fixture(scope="module")
def det(mlab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DetectorProcess]:
    base = tmp_path_factory.mktemp("evasions")
    conf = base / "detector.conf"
    conf.write_text("[detector]\nmodes = stcp, sudp\nipv6_prefix = 128\n")
    with DetectorProcess(mlab.victim, base / "alerts.jsonl", config=conf) as d:
        yield d


def _scans(det: DetectorProcess, src: str, proto: str = "tcp") -> list[dict[str, Any]]:
    got = det.wait_for(lambda r: r.get("PS_EVENT") == "scan" and r.get("PS_SRC") == src
                       and r.get("PS_PROTO") == proto)
    assert got, f"no {proto} scan record for {src}:\n{det.stderr()}"
    return got


BADSUM_V6 = """
from scapy.layers.inet6 import IPv6
from scapy.layers.inet import TCP
from scapy.layers.l2 import Ether
from scapy.sendrecv import sendp
for port in ({ports},):
    sendp(Ether() / IPv6(src="{src}", dst="{dst}") / TCP(sport=40000 + port, dport=port, flags="S", chksum=0x1234),
          iface="{iface}", verbose=False)
"""

# nmap options → the PS_SCAN the stealth sentry must report.
CASES = [
    ("-sW", [], "ack"),  # window scan: bare ACKs, told apart by the RST's window
    ("-sS", ["--scanflags", "SYNFIN"], "other"),
    ("-sS", ["--scanflags", "URGPSH"], "other"),
    ("-sS", ["--scanflags", "ACKPSH"], "ack"),  # answered with a RST like -sA: an ACK-class probe
    ("-sS", ["--scanflags", "FINACKURG"], "maimon"),
    ("-sS", ["--badsum"], "syn"),  # the host drops it unanswered; it is still a probe, and reported
    ("-sS", ["-g", "53"], "syn"),  # a "trusted" source port changes nothing
    ("-sF", ["--data-length", "40"], "fin"),
    ("-sS", ["--ttl", "3", "--ip-options", "R"], "syn"),
]


@pytest.mark.parametrize(("flag", "extra", "kind"), CASES, ids=[" ".join([c[0], *c[1]]) for c in CASES])
@pytest.mark.parametrize("family", [4, 6])
def test_nmap_options(mlab: Lab, det: DetectorProcess, flag: str, extra: list[str], kind: str, family: int) -> None:
    if family == 6 and "--ip-options" in extra:
        pytest.skip("IPv4 header options: nmap has no IPv6 equivalent")
    (src4, src6), = mlab.aliases(mlab.attacker, 1)
    src, target = (src4, mlab.victim.addr4) if family == 4 else (src6, mlab.victim.addr6)
    if family == 6 and "--badsum" in extra:
        # nmap 7.93 sends nothing with -6 --badsum (seen with tcpdump): the same probes, made with scapy.
        python_in(mlab.attacker, BADSUM_V6.format(src=src, dst=target, ports=TCP_PORTS, iface=mlab.attacker.iface))
    else:
        nmap(mlab.attacker, flag, target, TCP_PORTS, source=src, extra=extra)
    recs = _scans(det, src)
    assert len(recs) == 1 and recs[0]["PS_SCAN"] == kind and recs[0]["PS_MODE"] == "stcp", recs


@pytest.mark.parametrize("family", [4, 6])
def test_udp_from_source_port_53(mlab: Lab, det: DetectorProcess, family: int) -> None:
    (src4, src6), = mlab.aliases(mlab.attacker, 1)
    src, target = (src4, mlab.victim.addr4) if family == 4 else (src6, mlab.victim.addr6)
    nmap(mlab.attacker, "-sU", target, UDP_PORTS, source=src, extra=["-g", "53"])
    assert _scans(det, src, "udp")[0]["PS_SCAN"] == "udp"


@pytest.mark.parametrize("family", [4, 6])
def test_decoys_are_reported_too(mlab: Lab, det: DetectorProcess, family: int) -> None:
    """nmap -D: every decoy's spoofed probes are reported as scans from the decoy, with PS_VERIFIED=0 — the
    reason verified_only jails and the never-ban list exist (README: decoys)."""
    (real4, real6), (d1_4, d1_6), (d2_4, d2_6) = mlab.aliases(mlab.attacker, 3)
    real, decoys, target = ((real4, [d1_4, d2_4], mlab.victim.addr4) if family == 4
                            else (real6, [d1_6, d2_6], mlab.victim.addr6))
    nmap(mlab.attacker, "-sS", target, TCP_PORTS, source=real, extra=["-D", ",".join([*decoys, "ME"])])
    for src in (real, *decoys):
        rec = _scans(det, src)[0]
        assert (rec["PS_SCAN"], rec["PS_VERIFIED"]) == ("syn", "0"), rec


def _mac(mlab: Lab) -> str:
    out = mlab.victim.run(["ip", "-o", "link", "show", mlab.victim.iface]).stdout
    match = re.search(r"link/ether ([0-9a-f:]{17})", out)
    assert match, out
    return match[1]


@pytest.mark.parametrize("proto", ["tcp", "udp"])
def test_masscan(mlab: Lab, det: DetectorProcess, proto: str) -> None:
    """masscan's own stack (raw frames, its own source address), bounded by --rate and timeout."""
    (src4, _), = mlab.aliases(mlab.attacker, 1)
    ports = TCP_PORTS if proto == "tcp" else ",".join(f"U:{p}" for p in UDP_PORTS.split(","))
    argv = ["timeout", "10", "masscan", mlab.victim.addr4, "-p", ports, "--rate", "1000", "--wait", "1",
            "-e", mlab.attacker.iface, "--adapter-ip", src4, "--router-mac", _mac(mlab)]
    proc = mlab.attacker.run(argv, check=False, timeout=20)
    # masscan 1.3.2 sometimes keeps "waiting" past --wait in a namespace; its probes are out by then (timeout: 124)
    assert proc.returncode in (0, 124), proc.stderr
    rec = _scans(det, src4, proto)[0]
    assert rec["PS_SCAN"] == ("syn" if proto == "tcp" else "udp"), rec


def test_records_carry_no_per_packet_noise(det: DetectorProcess) -> None:
    """After all of the above, one scan record per (source, protocol): options change no record count."""
    scans = [r for r in det.records() if r.get("PS_EVENT") == "scan"]
    keys = [(r["PS_SRC"], r["PS_PROTO"]) for r in scans]
    assert len(keys) == len(set(keys)), keys
