"""detector.admit: the one admit-or-drop verdict, each reason, the refreshes it asks for, and every path using it."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

import pytest

from portsentinel import record as R
from portsentinel.detector import admit as A
from portsentinel.detector.adapters import procnet
from portsentinel.detector.config.model import DetectorConfig
from portsentinel.detector.pipeline import Pipeline


def a(text: str) -> bytes:
    return ipaddress.ip_address(text).packed


HOST4, HOST6, OTHER = a("203.0.113.1"), a("2001:db8::1"), a("203.0.113.99")
SRC, SRC6, IGNORED_SRC = a("198.51.100.7"), a("2001:db8:5::7"), a("10.9.3.4")
NOW = 1000.0


def view(**kw: object) -> A.HostView:
    v = A.HostView([ipaddress.ip_network("10.9.0.0/16"), ipaddress.ip_network("2001:db8:9::/48")],
                   ephemeral=(32768, 60999), **kw)  # type: ignore[arg-type]
    v.set_local(frozenset({HOST4, HOST6}), NOW)
    v.set_in_use(A.TCP, frozenset({22, 443}), NOW)
    v.set_in_use(A.UDP, frozenset({53}), NOW)
    return v


@pytest.mark.parametrize(("src", "dst", "proto", "port", "scan", "verdict"), [
    (SRC, HOST4, A.TCP, 1, "syn", A.ADMIT),
    (SRC6, HOST6, A.TCP, 1, "fin", A.ADMIT),
    (SRC, HOST4, A.UDP, 69, "udp", A.ADMIT),
    (SRC, OTHER, A.TCP, 1, "syn", A.NOT_LOCAL),
    (SRC, HOST4, A.TCP, 22, "syn", A.IN_USE),
    (SRC, HOST4, A.UDP, 53, "udp", A.IN_USE),
    (SRC, HOST4, A.UDP, 22, "udp", A.ADMIT),  # TCP's port in use is not UDP's
    (SRC, HOST4, A.TCP, 40000, "ack", A.LATE_ACK),
    (SRC, HOST4, A.TCP, 40000, "maimon", A.LATE_ACK),
    (SRC, HOST4, A.TCP, 40000, "syn", A.ADMIT),  # a SYN to the ephemeral range is a probe
    (SRC, HOST4, A.TCP, 80, "ack", A.ADMIT),
    (IGNORED_SRC, HOST4, A.TCP, 1, "syn", A.IGNORED),
    (a("2001:db8:9:1::1"), HOST6, A.TCP, 1, "syn", A.IGNORED),
    (HOST4, HOST4, A.TCP, 1, "syn", A.IGNORED),  # the host itself (ignore_self)
])
def test_verdicts(src: bytes, dst: bytes, proto: int, port: int, scan: str, verdict: int) -> None:
    assert view().probe(src, dst, proto, port, scan, NOW) == verdict


def test_order_of_the_reasons() -> None:
    """A probe with several reasons gets the first: not local, then in use, then late ACK, then ignored."""
    v = view()
    assert v.probe(IGNORED_SRC, OTHER, A.TCP, 22, "ack", NOW) == A.NOT_LOCAL
    assert v.probe(IGNORED_SRC, HOST4, A.TCP, 22, "ack", NOW) == A.IN_USE
    assert v.probe(IGNORED_SRC, HOST4, A.TCP, 40000, "ack", NOW) == A.LATE_ACK


def test_ignore_self_off() -> None:
    assert view(ignore_self=False).probe(HOST4, HOST4, A.TCP, 1, "syn", NOW) == A.ADMIT


def test_stale_facts_ask_to_be_read_again_and_then_decide() -> None:
    v = view()
    # An unknown destination: the addresses are read again after LOCAL_STALE, not before.
    assert v.probe(SRC, OTHER, A.TCP, 1, "syn", NOW + 0.5) == A.NOT_LOCAL
    assert v.probe(SRC, OTHER, A.TCP, 1, "syn", NOW + A.LOCAL_STALE) == A.REFRESH_LOCAL
    v.set_local(frozenset({HOST4, OTHER}), NOW + 1.0)  # the address appeared
    assert v.probe(SRC, OTHER, A.TCP, 1, "syn", NOW + 1.0) == A.REFRESH_LISTENERS  # the next stale fact
    v.set_in_use(A.TCP, frozenset({22, 443}), NOW + 1.0)
    assert v.probe(SRC, OTHER, A.TCP, 1, "syn", NOW + 1.0) == A.ADMIT
    # A free port: the listeners are read again when the last read is older than IN_USE_STALE.
    later = NOW + 1.0 + A.IN_USE_STALE * 2
    assert v.probe(SRC, HOST4, A.TCP, 8080, "syn", later) == A.REFRESH_LISTENERS
    v.set_in_use(A.TCP, frozenset({8080}), later, listening_only=True)  # a service started
    assert v.in_use[A.TCP] == frozenset({22, 443, 8080})  # the connected sockets of the full read are kept
    assert v.probe(SRC, HOST4, A.TCP, 8080, "syn", later) == A.IN_USE
    # An ACK to a free port: every socket is read again (a connection may have just opened), once.
    assert v.probe(SRC, HOST4, A.TCP, 8081, "ack", later) == A.REFRESH_SOCKETS
    v.set_in_use(A.TCP, frozenset({22, 8081}), later)
    assert v.probe(SRC, HOST4, A.TCP, 8081, "ack", later) == A.IN_USE
    assert v.probe(SRC, HOST4, A.TCP, 443, "ack", later) == A.ADMIT  # that connection is gone


def test_the_ignore_cache_follows_the_facts_and_stays_bounded() -> None:
    v = view()
    assert v.probe(HOST4, HOST4, A.TCP, 1, "syn", NOW) == A.IGNORED
    v.set_local(frozenset({HOST6}), NOW)  # the host lost that address: its cached verdict goes with it
    assert v.ignored(HOST4) is False
    v.set_ignore([ipaddress.ip_network("198.51.100.0/24")], ignore_self=True)
    assert v.probe(SRC, HOST6, A.TCP, 1, "syn", NOW) == A.IGNORED  # the new list, the cache emptied
    assert v.ignored(SRC) and not v.ignored(IGNORED_SRC)
    for n in range(A.IGNORE_CACHE_MAX + 2):
        v.ignored(n.to_bytes(4, "big"))
    assert len(v.ignore_cache) <= A.IGNORE_CACHE_MAX + 1


def test_packet_and_connection_verdicts() -> None:
    """The SCTP / IP-protocol path has no port of the host's; the classic sentries' sockets only the source."""
    v = view()
    assert v.packet(SRC, HOST4, NOW) == A.ADMIT
    assert v.packet(SRC, OTHER, NOW) == A.NOT_LOCAL
    assert v.packet(SRC, OTHER, NOW + A.LOCAL_STALE) == A.REFRESH_LOCAL
    assert v.packet(IGNORED_SRC, HOST4, NOW) == A.IGNORED
    assert v.connection(SRC) == A.ADMIT
    assert v.connection(IGNORED_SRC) == A.IGNORED
    assert v.connection(HOST6) == A.IGNORED


class Clock:
    now = NOW

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def pipe(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Pipeline, list[R.Record]]]:
    import time

    clock = Clock()
    monkeypatch.setattr(time, "monotonic", clock)
    monkeypatch.setattr(procnet, "ports_in_use", lambda proto, root="", *, listening_only=False: frozenset({22}))
    monkeypatch.setattr(procnet, "local_addresses", lambda root="": frozenset({HOST4, HOST6}))
    records: list[R.Record] = []
    p = Pipeline(DetectorConfig(ignore=(ipaddress.ip_network("10.9.0.0/16"),), scan_trigger=1), records.append)
    p.refresh_local(NOW)
    yield p, records


def test_the_classic_sentries_use_the_verdict(pipe: tuple[Pipeline, list[R.Record]]) -> None:
    p, records = pipe
    p.on_connection("tcp", 79, IGNORED_SRC, HOST4)
    p.on_connection("tcp", 79, HOST4, HOST4)  # the host connecting to itself
    assert p.counters.ignored == 2 and p.counters.probes == 0 and len(p.tracker) == 0
    p.on_connection("tcp", 79, SRC, HOST4)
    p.on_connection("udp", 69, SRC, HOST4)
    p.on_connection("tcp", 111, SRC, HOST4)
    assert p.counters.packets == 5 and p.counters.probes == 3
    scans = [r for r in records if r.event == "scan"]
    assert len(scans) == 1 and scans[0].get(R.F_SCAN) == "connect" and scans[0].get(R.F_PORT) == "111"
    assert scans[0].get(R.F_VERIFIED) == "1"


def test_settle_reads_each_fact_once(pipe: tuple[Pipeline, list[R.Record]], monkeypatch: pytest.MonkeyPatch,
                                     ) -> None:
    p, _ = pipe
    reads: list[str] = []

    def local_addresses(root: str = "") -> frozenset[bytes]:
        reads.append("local")
        return frozenset({HOST4})

    def ports_in_use(proto: str, root: str = "", *, listening_only: bool = False) -> frozenset[int]:
        reads.append("listeners" if listening_only else "sockets")
        return frozenset({22})

    monkeypatch.setattr(procnet, "local_addresses", local_addresses)
    monkeypatch.setattr(procnet, "ports_in_use", ports_in_use)
    later = NOW + 5.0  # every fact is stale
    first = p.view.probe(SRC, HOST4, A.TCP, 8081, "ack", later)
    assert first == A.REFRESH_LISTENERS
    assert p.settle(first, SRC, HOST4, A.TCP, 8081, "ack", later) == A.ADMIT
    assert reads == ["listeners", "sockets"]
    reads.clear()
    first = p.view.probe(SRC, OTHER, A.TCP, 8081, "ack", later)
    assert p.settle(first, SRC, OTHER, A.TCP, 8081, "ack", later) == A.NOT_LOCAL
    assert reads == ["local"]
