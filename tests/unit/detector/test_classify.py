"""detector.classify: TCP flags → scan kind, for every one of the 256 flag bytes."""

from __future__ import annotations

import pytest

from portsentinel.detector.classify import classify, classify_tcp

FIN, SYN, RST, PSH, ACK, URG, ECE, CWR = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80

# What nmap sends (closed ports, stealth scans) and what each must be called.
NMAP = {
    SYN: "syn",  # -sS, and -sT against a closed port
    FIN: "fin",  # -sF
    0: "null",  # -sN
    FIN | PSH | URG: "xmas",  # -sX
    ACK: "ack",  # -sA, -sW
    FIN | ACK: "maimon",  # -sM
}


def expected(flags: int) -> str | None:
    """The specification, written independently of the implementation."""
    f = flags & ~(ECE | CWR)
    if f in NMAP:
        return NMAP[f]
    if f & RST or f & (SYN | ACK) == SYN | ACK:
        return None  # answers are not probes
    if f & ACK:  # --scanflags ACKPSH & co.: the host answers them as it answers -sA / -sM
        return "maimon" if f & FIN else "ack"
    return "other"


@pytest.mark.parametrize("flags", range(256))
def test_every_flag_combination(flags: int) -> None:
    assert classify_tcp(flags) == expected(flags)
    assert classify(6, flags) == expected(flags)
    assert classify(17, flags) == "udp"


@pytest.mark.parametrize("flags,kind", sorted(NMAP.items()))
def test_nmap_probes(flags: int, kind: str) -> None:
    assert classify_tcp(flags) == kind


@pytest.mark.parametrize("flags", [RST, RST | ACK, SYN | ACK, SYN | ACK | ECE, SYN | RST, FIN | RST, SYN | ACK | PSH])
def test_not_probes(flags: int) -> None:
    assert classify_tcp(flags) is None


@pytest.mark.parametrize("flags,kind", [(ACK | PSH, "ack"), (ACK | URG, "ack"), (ACK | PSH | URG, "ack"),
                                        (ACK | PSH | FIN, "maimon"), (ACK | FIN | URG | PSH, "maimon")])
def test_ack_with_other_flags_is_an_ack_class_probe(flags: int, kind: str) -> None:
    assert classify_tcp(flags) == kind


@pytest.mark.parametrize("extra", [ECE, CWR, ECE | CWR])
@pytest.mark.parametrize("flags,kind", sorted(NMAP.items()))
def test_ece_and_cwr_are_ignored(flags: int, kind: str, extra: int) -> None:
    assert classify_tcp(flags | extra) == kind


@pytest.mark.parametrize("flags", [SYN | FIN, FIN | URG, PSH, URG, SYN | PSH, SYN | FIN | PSH | URG])
def test_odd_combinations_without_ack_are_other(flags: int) -> None:
    assert classify_tcp(flags) == "other"


def test_counts_over_all_bytes() -> None:
    kinds = [classify_tcp(f) for f in range(256)]
    # Each nmap kind matches 4 bytes (ECE/CWR free); 64 combinations of the six low bits, 32 without ACK/RST
    # … of which 16 (without ACK, RST) minus the 4 named ones without ACK (S, F, none, FPU) are "other".
    # With ACK and without SYN/RST: 8 combinations of FIN/PSH/URG, half with FIN ("maimon"), half without ("ack").
    for kind in ("syn", "fin", "null", "xmas"):
        assert kinds.count(kind) == 4
    assert kinds.count("ack") == kinds.count("maimon") == 4 * 4
    assert kinds.count("other") == 4 * (16 - 4)
    assert kinds.count(None) == 256 - 4 * 4 - 2 * 16 - 4 * 12
