"""IPv6 scanners that rotate their address (issue 9 §5), in the lab: the detector counts a /64 as one source, the
responder bans the /64 once (nft interval set), escalates to the /48 when several /64s of it are banned, and never
bans a prefix that holds a protected address.

The rotating scanner owns networks of its own (2001:db8:beef::/48 and 2001:db8:cafe::/48 on the attacker's veth;
the victim routes them on-link), so its /64 and /48 hold none of the victim's addresses. Answers are counted on the
victim's side (tests/lab/counting.py). One detector and one responder serve the whole module.
"""

from __future__ import annotations

import ipaddress
import subprocess
import time
from collections.abc import Iterator

import pytest

from tests.lab.counting import answers, install_counters, tcp_answers
from tests.lab.detector import DetectorProcess, python_in
from tests.lab.netns import Host, Lab
from tests.lab.nftset import set_elements
from tests.lab.pipeline import ResponderProcess, detector_for, make_config

pytestmark = pytest.mark.lab

#: Six probes per address: PortSentry's ports 1 and 31337 among closed ports the detector does not watch.
PORTS = (21, 1, 25, 31337, 80, 443)


def own_networks(lab: Lab, *nets: str) -> None:
    """The attacker's extra networks: routed on-link by the victim (inside the lab namespaces only)."""
    for net in nets:
        lab.victim.run(["ip", "-6", "route", "add", net, "dev", lab.victim.iface])


def add_addresses(host: Host, addrs: list[str]) -> None:
    batch = "".join(f"addr add {a}/64 dev {host.iface} nodad\n" for a in addrs)
    host.run(["ip", "-6", "-batch", "-"], input=batch)


def rotate(lab: Lab, sources: list[str], *, ports: tuple[int, ...] = PORTS, inter: float = 0.004,
           pause: float = 0.0) -> None:
    """SYNs from each source in turn to ``ports`` of the victim (scapy, bounded), ``inter`` seconds apart;
    ``pause`` seconds between sources."""
    code = ("import time\nfrom scapy.layers.inet import TCP\nfrom scapy.layers.inet6 import IPv6\n"
            "from scapy.sendrecv import send\n"
            f"for n, src in enumerate({sources!r}):\n"
            f"    send([IPv6(src=src, dst={lab.victim.addr6!r})/TCP(sport=41000 + n, dport=p, flags='S') "
            f"for p in {list(ports)!r}], inter={inter}, verbose=False)\n"
            f"    time.sleep({pause})\n")
    python_in(lab.attacker, code, timeout=120)


def bans(resp: ResponderProcess) -> list[dict[str, str]]:
    return [r for r in resp.records() if r.get("PS_EVENT") == "ban" and r.get("PS_JAIL") == "scan"]


@pytest.fixture(scope="module")
def pipeline(mlab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Lab, ResponderProcess,
                                                                                     DetectorProcess]]:
    """Detector (stcp, default ipv6_prefix 64) and responder (nftables only, /64 bans, escalation to the /48 after
    three /64s within 10 minutes) in the victim namespace."""
    base = tmp_path_factory.mktemp("prefix")
    base.chmod(0o755)
    conf = (f"[DEFAULT]\nlogpath = {base}/alerts.jsonl\nbantime = 600\nbantime.increment = false\n"
            "[scan]\nenabled = true\nfilter = portsentinel\nmaxretry = 1\nmaxbans_per_minute = 20\n"
            "ban_prefix_v6_escalate = 48\nban_prefix_v6_escalate_after = 3\nban_prefix_v6_escalate_window = 10m\n"
            "action = nftables[name=scan]\n")
    cfg = make_config(base, conf)
    own_networks(mlab, "2001:db8:beef::/48", "2001:db8:cafe::/48")
    install_counters(mlab.victim)
    with detector_for(mlab.victim, base, "stcp") as det, ResponderProcess(mlab.victim, base, cfg) as resp:
        yield mlab, resp, det
        assert resp.stop() == 0


def test_rotating_scanner_in_its_64_gets_few_answers_and_one_ban(
        pipeline: tuple[Lab, ResponderProcess, DetectorProcess]) -> None:
    lab, resp, det = pipeline
    sources = [f"2001:db8:beef:1::{0x100 + i:x}" for i in range(91)]
    add_addresses(lab.attacker, sources)
    answers(lab.victim, reset=True)
    rotate(lab, sources)
    answered = tcp_answers(lab.victim)
    assert answered <= 10, answered
    time.sleep(0.5)  # records of the last probes
    mine = [b for b in bans(resp) if b.get("PS_SRC_NET", "").startswith("2001:db8:beef:1:")]
    assert len(mine) == 1, mine
    assert mine[0]["PS_SRC_NET"] == "2001:db8:beef:1::/64" and mine[0]["PS_SRC"] in sources
    # A network ban goes to the jail's interval set, not to its address (hash) set.
    assert "2001:db8:beef:1::/64" in set_elements(lab.victim, "scan_v6net", only=True)
    assert "2001:db8:beef:1::/64" not in set_elements(lab.victim, "scan_v6", only=True)
    # The detector counted the /64 as one source: one scan record naming the address and its network.
    scans = [r for r in det.records() if r.get("PS_EVENT") == "scan" and r.get("PS_SRC") in sources]
    assert len(scans) == 1 and scans[0]["PS_SRC_NET"] == "2001:db8:beef:1::/64", scans
    assert resp.ask("status")["jails"]["scan"]["cap_refused"] == 0


def test_several_64s_of_one_48_escalate_to_the_48(pipeline: tuple[Lab, ResponderProcess, DetectorProcess]) -> None:
    lab, resp, _ = pipeline
    sources = [f"2001:db8:cafe:{n}::7" for n in range(1, 6)]
    add_addresses(lab.attacker, sources)
    rotate(lab, sources, ports=(1, 31337), pause=0.3)
    assert resp.wait_for(lambda r: r.get("PS_SRC_NET") == "2001:db8:cafe::/48" and r.get("PS_EVENT") == "ban",
                         timeout=5), resp.records()[-5:]
    mine = [b["PS_SRC_NET"] for b in bans(resp) if b.get("PS_SRC_NET", "").startswith("2001:db8:cafe:")]
    assert mine == ["2001:db8:cafe:1::/64", "2001:db8:cafe:2::/64", "2001:db8:cafe::/48"], mine
    covered = [r for r in resp.records() if r.get("PS_EVENT") == "unban" and "covered by" in r.get("PS_DETAIL", "")]
    assert sorted(r["PS_SRC_NET"] for r in covered) == ["2001:db8:cafe:1::/64", "2001:db8:cafe:2::/64"]
    elems = set_elements(lab.victim, "scan_v6net", only=True)
    narrow = [e for e in map(str, elems) if e.endswith("/64") and e.startswith("2001:db8:cafe:")]
    assert "2001:db8:cafe::/48" in elems and not narrow, elems
    # Sources of the /48 outside the banned /64s are dropped by the kernel now.
    answers(lab.victim, reset=True)
    rotate(lab, ["2001:db8:cafe:9::1"], ports=(22, 23))
    assert tcp_answers(lab.victim) == 0


def test_a_prefix_holding_a_protected_address_is_not_banned(
        pipeline: tuple[Lab, ResponderProcess, DetectorProcess]) -> None:
    """A scanner in the victim's own /64: the /64 holds the victim's address, so the scanner's address alone is
    banned, and the ban record says so; a neighbour in the same /64 keeps working."""
    lab, resp, _ = pipeline
    net = lab.subnet6.split("::")[0]
    a6, friend = f"{net}::a0", f"{net}::a1"  # in the victim's own /64 (Lab.aliases gives /64s of their own)
    for addr in (a6, friend):
        lab.attacker.run(["ip", "-6", "addr", "add", f"{addr}/64", "dev", lab.attacker.iface, "nodad"])
    rotate(lab, [a6], ports=(1,))
    got = resp.wait_for(lambda r: r.get("PS_EVENT") == "ban" and r.get("PS_SRC") == a6, timeout=5)
    assert got, resp.records()[-5:]
    assert "PS_SRC_NET" not in got[0] and "holds protected" in got[0]["PS_DETAIL"], got[0]
    assert f"/64 holds protected {lab.victim.addr6} (own address)" in got[0]["PS_DETAIL"]
    assert a6 in set_elements(lab.victim, "scan_v6", only=True)
    elems = set_elements(lab.victim, "scan_v6")
    assert a6 in elems and not [e for e in elems if ipaddress.ip_address(lab.victim.addr6)
                                in ipaddress.ip_network(e)], elems
    out = lab.attacker.run(["ping", "-6", "-c1", "-W2", "-I", friend, lab.victim.addr6], check=False)
    assert out.returncode == 0, out.stdout


def test_ipv4_stays_per_address(pipeline: tuple[Lab, ResponderProcess, DetectorProcess]) -> None:
    lab, resp, _ = pipeline
    (a4, _), (b4, _) = lab.aliases(lab.attacker, 2)
    code = ("from scapy.layers.inet import IP, TCP\nfrom scapy.sendrecv import send\n"
            f"send(IP(src={a4!r}, dst={lab.victim.addr4!r})/TCP(dport=1, flags='S'), verbose=False)\n")
    python_in(lab.attacker, code)
    got = resp.wait_for(lambda r: r.get("PS_EVENT") == "ban" and r.get("PS_SRC") == a4, timeout=5)
    assert got and "PS_SRC_NET" not in got[0]
    assert set_elements(lab.victim, "scan_v4") == [a4]
    proc = subprocess.run(lab.attacker.argv(["ping", "-c1", "-W1", "-I", b4, lab.victim.addr4]),
                          capture_output=True, timeout=10, check=False)
    assert proc.returncode == 0


def test_manual_network_ban_and_unban_by_address(pipeline: tuple[Lab, ResponderProcess, DetectorProcess]) -> None:
    lab, resp, _ = pipeline
    assert resp.ask("ban", "scan", "2001:db8:77::/64")["ok"]
    listed = lab.victim.run(["nft", "list", "set", "inet", "portsentinel", "scan_v6net"]).stdout
    assert "flags interval,timeout" in listed and "2001:db8:77::/64" in listed
    hashed = lab.victim.run(["nft", "list", "set", "inet", "portsentinel", "scan_v6"]).stdout
    assert "flags timeout" in hashed and "interval" not in hashed
    assert [b["ip"] for b in resp.ask("unban", "2001:db8:77::5")["unbanned"]] == ["2001:db8:77::/64"]
    assert "2001:db8:77::/64" not in set_elements(lab.victim, "scan_v6")
