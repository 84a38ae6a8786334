"""IP-protocol scans (nmap -sO) and SCTP scans (nmap -sY, -sZ) against the detector, IPv4 and IPv6, real nmap.

Each case uses a fresh source: a new IPv4 address, and an IPv6 address in a /64 of its own (sources are tracked
and trapped per /64 by default; nothing needs to answer these probes, so the /64 need not be on-link). One
detector runs the sentry under test, so the lab time stays small.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import pytest

from tests.lab.detector import DetectorProcess, nmap, python_in
from tests.lab.netns import Lab

_NETS = iter(range(1, 0xFFFF))


def sources(lab: Lab, count: int) -> list[tuple[str, str]]:
    """``count`` fresh (IPv4, IPv6) sources of the attacker: IPv4 aliases, IPv6 addresses each in a new /64."""
    out = []
    base6 = lab.subnet6.split("::")[0]  # 2001:db8:N
    for a4, _ in lab.aliases(lab.attacker, count):
        a6 = f"{base6}:{next(_NETS):x}::2"
        lab.attacker.run(["ip", "-6", "addr", "add", f"{a6}/64", "dev", lab.attacker.iface, "nodad"])
        out.append((a4, a6))
    return out

pytestmark = pytest.mark.lab

#: Protocol numbers with no handler on a stock kernel (no tunnels, no SCTP in the lab's kernel or no listener):
#: 3 GGP, 5 ST, 7 CBT, 8 EGP, 9 IGP, 99, 250-255 — eleven, more than proto_trigger (4).
UNHANDLED = "3,5,7-9,99,250-254"
FAST = ["-T5", "--min-rate", "500"]


def _scans(det: DetectorProcess, src: str, proto: str, timeout: float = 10) -> list[dict[str, Any]]:
    return det.wait_for(lambda r: r.get("PS_EVENT") == "scan" and r.get("PS_SRC") == src
                        and r.get("PS_PROTO") == proto, timeout=timeout)


def _one(det: DetectorProcess, src: str, proto: str) -> dict[str, Any]:
    got = _scans(det, src, proto)
    assert got, f"no {proto} scan record for {src}; records: {det.records()}\n{det.stderr()}"
    assert len(got) == 1, got
    return got[0]


def test_ip_protocol_scan(mlab: Lab, tmp_path: Path) -> None:
    """-sO over unhandled protocols is one `proto` record; handled protocols and a few stray ones are none."""
    (s4, s6), (q4, q6) = sources(mlab, 2)
    with DetectorProcess(mlab.victim, tmp_path / "alerts.jsonl", modes="aproto") as det:
        for src, target in ((s4, mlab.victim.addr4), (s6, mlab.victim.addr6)):
            nmap(mlab.attacker, "-sO", target, UNHANDLED, source=src, extra=FAST)
            rec = _one(det, src, "ip")
            assert (rec["PS_SCAN"], rec["PS_MODE"], rec["PS_VERIFIED"]) == ("proto", "aproto", "0"), rec
            assert int(rec["PS_PORT"]) in {3, 5, 7, 8, 9, 99, 250, 251, 252, 253, 254}, rec
            assert rec["PS_PORTS"] == "5", rec  # reported on the fifth distinct protocol (proto_trigger 4)
            assert rec["PS_DST"] == target and rec["PS_IFACE"] == mlab.victim.iface
            assert rec["MESSAGE"] == (f"attackalert: IP protocol scan from host: {src}/{src} to IP protocol: "
                                      f"{rec['PS_PORT']}")
        # Handled protocols (nmap sends real ICMP, IGMP, TCP and UDP headers) plus three unhandled ones: below
        # the trigger, no record.
        for src, target, ports in ((q4, mlab.victim.addr4, "1,2,6,17,3,5,7"),
                                   (q6, mlab.victim.addr6, "6,17,58,59,3,5,7")):
            nmap(mlab.attacker, "-sO", target, ports, source=src, extra=FAST)
        assert not _scans(det, q4, "ip", timeout=1.5) and not _scans(det, q6, "ip", timeout=0.1), det.records()
        listen = [r for r in det.records() if r.get("PS_EVENT") == "listen" and r.get("PS_MODE") == "aproto"]
        assert listen and listen[0]["PS_PROTO"] == "ip" and int(listen[0]["PS_PORTS"]) > 240, listen
        assert det.stop() == 0


@pytest.mark.parametrize("mode,ports", [("ssctp", "2905,3868,36412"), ("asctp", "40000-40003")])
def test_sctp_scans(mlab: Lab, tmp_path: Path, mode: str, ports: str) -> None:
    """-sY and -sZ, IPv4 and IPv6: one `sctp` record each, `init` / `cookie`."""
    fresh = sources(mlab, 2)
    with DetectorProcess(mlab.victim, tmp_path / "alerts.jsonl", modes=mode) as det:
        for (flag, kind), (s4, s6) in zip((("-sY", "init"), ("-sZ", "cookie")), fresh, strict=True):
            for src, target in ((s4, mlab.victim.addr4), (s6, mlab.victim.addr6)):
                nmap(mlab.attacker, flag, target, ports, source=src, extra=FAST)
                rec = _one(det, src, "sctp")
                assert (rec["PS_SCAN"], rec["PS_MODE"], rec["PS_PROTO"]) == (kind, mode, "sctp"), rec
                assert rec["PS_DST"] == target and rec["PS_IFACE"] == mlab.victim.iface
                label = "INIT" if kind == "init" else "COOKIE-ECHO"
                assert rec["MESSAGE"] == (f"attackalert: SCTP {label} scan from host: {src}/{src} to SCTP port: "
                                          f"{rec['PS_PORT']}")
        assert det.stop() == 0


SCTP_LISTENER = ("import socket,sys,time\ns=socket.socket(socket.AF_INET6,socket.SOCK_STREAM,132)\n"
                 "s.bind(('::',int(sys.argv[1])))\ns.listen(8)\nprint('ready',flush=True)\ntime.sleep(60)\n")


def _kernel_has_sctp(lab: Lab) -> bool:
    code = ("import socket\ntry:\n socket.socket(socket.AF_INET, socket.SOCK_STREAM, 132).close(); print('yes')\n"
            "except OSError:\n print('no')\n")
    return python_in(lab.victim, code).strip() == "yes"


def test_asctp_skips_a_port_with_an_sctp_listener(mlab: Lab, tmp_path: Path) -> None:
    """An SCTP INIT to a port with an SCTP socket is the service's, not a probe (needs the kernel's SCTP)."""
    if not _kernel_has_sctp(mlab):
        pytest.skip("this kernel has no SCTP sockets (CONFIG_IP_SCTP off or the sctp module not loadable): "
                    "the in-use check is covered by the unit tests only")
    from tests.lab.detector import tool

    (s4, _), = sources(mlab, 1)
    lst = mlab.victim.popen([tool("python"), "-c", SCTP_LISTENER, "40100"], stdout=-1)
    assert lst.stdout is not None and lst.stdout.readline().strip() == b"ready"
    with DetectorProcess(mlab.victim, tmp_path / "alerts.jsonl", modes="asctp") as det:
        nmap(mlab.attacker, "-sY", mlab.victim.addr4, "40100", source=s4, extra=FAST)
        assert not _scans(det, s4, "sctp", timeout=1.5)
        nmap(mlab.attacker, "-sY", mlab.victim.addr4, "40101", source=s4, extra=FAST)
        assert _one(det, s4, "sctp")["PS_PORT"] == "40101"
        assert det.stop() == 0



def net64(addr: str) -> str:
    return str(ipaddress.ip_network(f"{addr}/64", strict=False).network_address)


def test_kernel_trap_bans_sctp_and_ip_protocol_scans(mlab: Lab, tmp_path: Path) -> None:
    """The trap's default protocols (tcp, udp, sctp, ip): -sY, -sZ and -sO sources land in the tarpit sets at
    their first probe, IPv4 and IPv6; handled protocols (ICMP echo) from another source do not."""
    from tests.integration.test_trap import scan, trap_config
    from tests.lab.nftset import set_elements
    from tests.lab.pipeline import ResponderProcess

    cfg = trap_config(tmp_path, "rate=1000/second")
    (y4, y6), (z4, z6), (o4, o6) = sources(mlab, 3)
    (p4, p6), = mlab.aliases(mlab.attacker, 1)  # on-link: the ping needs its answers
    with ResponderProcess(mlab.victim, tmp_path, cfg) as resp:
        for src, target in ((y4, mlab.victim.addr4), (y6, mlab.victim.addr6)):
            scan(mlab, ["-sY", "-p", "36412,2905", "-T5"], target, src)
        for src, target in ((z4, mlab.victim.addr4), (z6, mlab.victim.addr6)):
            scan(mlab, ["-sZ", "-p", "3868", "-T5"], target, src)
        for src, target in ((o4, mlab.victim.addr4), (o6, mlab.victim.addr6)):
            out = scan(mlab, ["-sO", "-p", "99,250", "-T5"], target, src).stdout
            assert "closed" not in out, out  # no "protocol unreachable" left the victim
        for src, target in ((p4, mlab.victim.addr4), (p6, mlab.victim.addr6)):
            mlab.attacker.run(["ping", "-c", "2", "-i", "0.2", "-W", "1", "-I", src, target])
        # The tarpit holds an IPv6 source's /64 (the network address), an IPv4 source itself.
        for fam, srcs in (("trap_t4", {y4, z4, o4}), ("trap_t6", {net64(y6), net64(z6), net64(o6)})):
            got = set(set_elements(mlab.victim, fam))
            assert srcs <= got and not {p4, net64(p6)} & got, (fam, got)
        for src, proto in ((y4, "sctp"), (y6, "sctp"), (z4, "sctp"), (z6, "sctp"), (o4, "ip"), (o6, "ip")):
            assert resp.wait_for(lambda r, s=src, p=proto: r.get("PS_ACTION") == "kernel-trap"
                                 and r.get("PS_EVENT") == "ban" and r.get("PS_SRC") == s and r.get("PS_PROTO") == p,
                                 timeout=5), (src, resp.records())
        assert resp.stop() == 0


def test_pipeline_bans_sctp_and_ip_protocol_scanners(mlab: Lab, tmp_path: Path) -> None:
    """Detector (its default modes) → the shipped portsentinel-sctp / portsentinel-proto filters → nftables."""
    from tests.lab.pipeline import ResponderProcess, make_config

    conf = (f"[DEFAULT]\nlogpath = {tmp_path}/alerts.jsonl\nbantime = 600\nbantime.increment = false\n"
            "[sctp]\nenabled = true\nfilter = portsentinel-sctp\naction = nftables[name=sctp]\n"
            "[proto]\nenabled = true\nfilter = portsentinel-proto\naction = nftables[name=proto]\n")
    cfg = make_config(tmp_path, conf)
    (y4, y6), (o4, o6) = sources(mlab, 2)
    with DetectorProcess(mlab.victim, tmp_path / "alerts.jsonl", extra=["--wake", str(tmp_path / "wake.sock")]), \
            ResponderProcess(mlab.victim, tmp_path, cfg) as resp:
        for src, target in ((y4, mlab.victim.addr4), (y6, mlab.victim.addr6)):
            nmap(mlab.attacker, "-sY", target, "36412,2905", source=src, extra=FAST)
        for src, target in ((o4, mlab.victim.addr4), (o6, mlab.victim.addr6)):
            nmap(mlab.attacker, "-sO", target, UNHANDLED, source=src, extra=FAST)
        for src, jail in ((y4, "sctp"), (y6, "sctp"), (o4, "proto"), (o6, "proto")):
            bans = resp.wait_for(lambda r, s=src: r.get("PS_EVENT") == "ban" and r.get("PS_SRC") == s, timeout=10)
            assert [b["PS_JAIL"] for b in bans] == [jail], (src, bans, resp.stderr())
        for jail, v4 in (("sctp", y4), ("proto", o4)):
            listed = mlab.victim.run(["nft", "list", "set", "inet", "portsentinel", f"{jail}_v4"]).stdout
            assert v4 in listed, listed
        assert resp.stop() == 0
