"""Each of the six sentries against real nmap scans from the attacker namespace, IPv4 and IPv6."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.lab.detector import DetectorProcess, nmap
from tests.lab.netns import Lab

pytestmark = pytest.mark.lab

# nmap flag → the PS_SCAN the stealth sentries must report. A connect scan of a closed port is a SYN on the wire.
STEALTH_TCP = {"-sS": "syn", "-sF": "fin", "-sN": "null", "-sX": "xmas", "-sA": "ack", "-sM": "maimon"}


def _one(det: DetectorProcess, src: str, proto: str) -> dict[str, Any]:
    got = det.wait_for(lambda r: r.get("PS_EVENT") == "scan" and r.get("PS_SRC") == src
                       and r.get("PS_PROTO") == proto)
    assert got, f"no {proto} scan record for {src}; records: {det.records()}\n{det.stderr()}"
    assert len(got) == 1, got
    return got[0]


@pytest.mark.parametrize("mode,ports", [("stcp", "1,11,15,79"), ("atcp", "1-60")])
def test_stealth_tcp_scans(mlab: Lab, tmp_path: Path, mode: str, ports: str) -> None:
    sources = mlab.aliases(mlab.attacker, len(STEALTH_TCP))
    with DetectorProcess(mlab.victim, tmp_path / "alerts.jsonl", modes=mode) as det:
        for (flag, kind), (src4, src6) in zip(STEALTH_TCP.items(), sources, strict=True):
            for src, target in ((src4, mlab.victim.addr4), (src6, mlab.victim.addr6)):
                nmap(mlab.attacker, flag, target, ports, source=src)
                rec = _one(det, src, "tcp")
                assert (rec["PS_SCAN"], rec["PS_MODE"], rec["PS_VERIFIED"]) == (kind, mode, "0"), rec
                assert rec["PS_DST"] in (mlab.victim.addr4, mlab.victim.addr6)
                assert rec["PS_IFACE"] == mlab.victim.iface
                assert rec["MESSAGE"].startswith("attackalert: ")
        # A connect scan of a closed port: the SYN is what the wire shows.
        for target, src in ((mlab.victim.addr4, mlab.attacker.addr4), (mlab.victim.addr6, mlab.attacker.addr6)):
            nmap(mlab.attacker, "-sT", target, ports, source=src)
            assert _one(det, src, "tcp")["PS_SCAN"] == "syn"
        assert det.stop() == 0


@pytest.mark.parametrize("mode,ports", [("sudp", "1,7,9,69"), ("audp", "1-40")])
def test_stealth_udp_scans(mlab: Lab, tmp_path: Path, mode: str, ports: str) -> None:
    (src4, src6), = mlab.aliases(mlab.attacker, 1)
    with DetectorProcess(mlab.victim, tmp_path / "alerts.jsonl", modes=mode) as det:
        for src, target in ((src4, mlab.victim.addr4), (src6, mlab.victim.addr6)):
            nmap(mlab.attacker, "-sU", target, ports, source=src)
            rec = _one(det, src, "udp")
            assert (rec["PS_SCAN"], rec["PS_MODE"], rec["PS_PROTO"]) == ("udp", mode, "udp"), rec
        assert det.stop() == 0


def test_tcp_connect_mode_is_verified(mlab: Lab, tmp_path: Path) -> None:
    with DetectorProcess(mlab.victim, tmp_path / "alerts.jsonl", modes="tcp") as det:
        for target, src in ((mlab.victim.addr4, mlab.attacker.addr4), (mlab.victim.addr6, mlab.attacker.addr6)):
            out = nmap(mlab.attacker, "-sT", target, "1,11,15", source=src)
            assert "open" in out  # the tcp sentry really listens
            rec = _one(det, src, "tcp")
            assert (rec["PS_SCAN"], rec["PS_MODE"], rec["PS_VERIFIED"]) == ("connect", "tcp", "1"), rec
            assert rec["MESSAGE"].startswith("attackalert: TCP Connect scan from host: ")
        assert det.stop() == 0


def test_udp_listen_mode(mlab: Lab, tmp_path: Path) -> None:
    (src4, src6), = mlab.aliases(mlab.attacker, 1)
    with DetectorProcess(mlab.victim, tmp_path / "alerts.jsonl", modes="udp") as det:
        for src, target in ((src4, mlab.victim.addr4), (src6, mlab.victim.addr6)):
            nmap(mlab.attacker, "-sU", target, "7,9,69", source=src)
            rec = _one(det, src, "udp")
            assert (rec["PS_SCAN"], rec["PS_MODE"], rec["PS_VERIFIED"]) == ("udp", "udp", "0"), rec
        assert det.stop() == 0


def test_all_modes_in_one_process(mlab: Lab, tmp_path: Path) -> None:
    """tcp+udp listeners and the advanced sentries together: a bound port is the listener's, not atcp's."""
    (src4, _), (src4b, _) = mlab.aliases(mlab.attacker, 2)
    with DetectorProcess(mlab.victim, tmp_path / "alerts.jsonl", modes="tcp,udp,atcp,audp") as det:
        nmap(mlab.attacker, "-sT", mlab.victim.addr4, "1", source=mlab.attacker.addr4)
        rec = _one(det, mlab.attacker.addr4, "tcp")
        assert (rec["PS_MODE"], rec["PS_SCAN"]) == ("tcp", "connect"), rec
        nmap(mlab.attacker, "-sS", mlab.victim.addr4, "2-5", source=src4)
        assert _one(det, src4, "tcp")["PS_MODE"] == "atcp"
        nmap(mlab.attacker, "-sU", mlab.victim.addr4, "2-5", source=src4b)
        assert _one(det, src4b, "udp")["PS_MODE"] == "audp"
        assert det.stop() == 0
