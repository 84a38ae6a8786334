"""Re-arm (issue 9 §3): the message format, the tracker forgetting a source whose ban ended, the final summary,
and the two sockets end to end on this host (unix datagrams; no network)."""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from portsentinel import record as R
from portsentinel.common import rearm as M
from portsentinel.detector.adapters import procnet
from portsentinel.detector.adapters.rearm import RearmSocket
from portsentinel.detector.config.model import DetectorConfig
from portsentinel.detector.decide import Decider
from portsentinel.detector.service import Detector
from portsentinel.detector.tracker import Tracker
from portsentinel.responder.actions.action import KERNEL_GRACE
from portsentinel.responder.actions.executor import Executor
from portsentinel.responder.adapters.rearm import MAX_PENDING, RearmSender
from portsentinel.responder.adapters.runner import Result
from portsentinel.responder.config.jailconf import ActionRef, JailConfig
from portsentinel.responder.core.bans import Ban
from tests.conftest import ROOT

V4, V6 = "198.51.100.7", "2001:db8::7"
DST = bytes([203, 0, 113, 1])


def packed(text: str) -> bytes:
    return ipaddress.ip_address(text).packed


# ----------------------------------------------------------------------------- the message

def test_encode_decode_roundtrip() -> None:
    (data,) = M.encode([V4, V6, "2001:db8:1::/48", "10.0.0.0/8"])
    assert data == b"PSREARM1 198.51.100.7 2001:db8::7 2001:db8:1::/48 10.0.0.0/8"
    got = M.decode(data)
    assert not got.everything
    assert got.addresses == [packed(V4), packed(V6)]
    assert got.networks == [(16, int(ipaddress.ip_address("2001:db8:1::")), int(ipaddress.ip_address(
        "2001:db8:1:ffff:ffff:ffff:ffff:ffff"))), (4, 10 << 24, (11 << 24) - 1)]


def test_star_is_alone_and_wins() -> None:
    assert M.encode([V4, "*", V6]) == [b"PSREARM1 *"]
    assert M.decode(b"PSREARM1 *").everything
    with pytest.raises(M.RearmError, match="only target"):
        M.decode(b"PSREARM1 * 198.51.100.7")


def test_many_targets_are_split_within_the_limits() -> None:
    addrs = [str(ipaddress.IPv6Address(0x20010DB8 << 96 | (0xFFFF << 64) | i)) for i in range(1000)]
    datagrams = M.encode(addrs)
    assert all(len(d) <= M.MAX_DATAGRAM and d.count(b" ") <= M.MAX_TARGETS for d in datagrams)
    back = [a for d in datagrams for a in M.decode(d).addresses]
    assert back == [packed(a) for a in addrs]


def test_canonical_target() -> None:
    assert M.canonical_target("::ffff:198.51.100.7") == V4
    assert M.canonical_target("2001:DB8::7") == V6
    with pytest.raises(ValueError):
        M.canonical_target("10.0.0.1/8")  # host bits set
    with pytest.raises(ValueError):
        M.canonical_target("bad")


@pytest.mark.parametrize("data, why", [
    (b"", "PSREARM1"),
    (b"PSREARM1", "no target"),
    (b"PSREARM1 ", "target 1"),
    (b"PSREARM1  198.51.100.7", "target 1"),
    (b"PSREARM1 198.51.100.7 ", "target 2"),
    (b"PSREARM2 198.51.100.7", "PSREARM1"),
    (b"psrearm1 198.51.100.7", "PSREARM1"),
    (b"PSREARM1 198.51.100.7\n", "target 1"),
    (b"PSREARM1 2001:DB8::7", "canonical"),
    (b"PSREARM1 198.051.100.7", "target 1"),
    (b"PSREARM1 ::ffff:198.51.100.7", "canonical"),
    (b"PSREARM1 10.0.0.1/8", "target 1"),
    (b"PSREARM1 10.0.0.0/08", "canonical"),
    (b"PSREARM1 1.2.3.4;reboot", "target 1"),
    (b"PSREARM1 \xff\xfe", "target 1"),
    (b"PSREARM1 " + b" ".join([b"10.0.0.1"] * (M.MAX_TARGETS + 1)), "targets"),
    (b"PSREARM1 " + b"1" * M.MAX_DATAGRAM, "bytes"),
])
def test_decode_refuses_anything_but_an_exact_message(data: bytes, why: str) -> None:
    with pytest.raises(M.RearmError, match=why):
        M.decode(data)


@given(st.binary(max_size=200))
def test_decode_never_crashes(data: bytes) -> None:
    try:
        got = M.decode(data)
    except M.RearmError:
        return
    assert data.startswith(b"PSREARM1 ") and (got.everything or got.addresses or got.networks)


@given(st.lists(st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)), min_size=1, max_size=300))
def test_encode_decode_any_addresses(addrs: list[ipaddress.IPv4Address | ipaddress.IPv6Address]) -> None:
    texts = list(dict.fromkeys(M.canonical_target(str(a)) for a in addrs))
    back = [a for d in M.encode(texts) for a in M.decode(d).addresses]
    assert back == [ipaddress.ip_address(t).packed for t in texts]


# ----------------------------------------------------------------------------- tracker and decider

def setup(trigger: int = 0) -> tuple[Tracker, Decider]:
    t = Tracker(trigger=trigger, window=60.0, summary_interval=30.0, max_sources=1000)
    return t, Decider(t, window=60.0, max_records_per_second=50, ifname=lambda i: "eth0")


def probe(t: Tracker, d: Decider, src: str, port: int, now: float, proto: int = 6) -> R.Record | None:
    st_ = t.hit(packed(src) + bytes((proto,)), DST, proto, port, "syn" if proto == 6 else "udp", "stcp", 1,
                False, now)
    return None if st_ is None else d.on_trigger(st_, now, 1_700_000_000.0 + now)


def test_a_rearmed_source_is_a_new_scan_on_its_next_probe() -> None:
    t, d = setup()
    assert probe(t, d, V4, 1, 0.0) is not None
    for i in range(20):  # probes through the ban fold into the source
        assert probe(t, d, V4, 2 + i, 1.0 + i * 0.1) is None
    gone = t.rearm(packed(V4))
    assert len(gone) == 1 and gone[0].hits == 21
    (summary,) = d.rearmed(gone, 3.0, 1_700_000_003.0)
    assert summary.event == "summary" and summary.get(R.F_DETAIL) == "rearmed"
    assert summary.get(R.F_HITS) == "21" and summary.get(R.F_PORTS) == "21"
    rec = probe(t, d, V4, 143, 3.5)
    assert rec is not None and rec.event == "scan" and rec.get(R.F_PORT) == "143" and rec.get(R.F_HITS) == "1"


def test_rearm_without_new_probes_writes_no_summary() -> None:
    t, d = setup()
    assert probe(t, d, V4, 1, 0.0) is not None
    gone = t.rearm(packed(V4))
    assert len(gone) == 1 and d.rearmed(gone, 1.0, 1.0) == []


def test_rearm_covers_every_protocol_and_only_that_address() -> None:
    t, d = setup()
    assert probe(t, d, V4, 1, 0.0, proto=6) is not None
    assert probe(t, d, V4, 1, 0.0, proto=17) is not None
    assert probe(t, d, "198.51.100.8", 1, 0.0) is not None
    assert len(t.rearm(packed(V4))) == 2
    assert probe(t, d, V4, 5, 1.0, proto=6) is not None
    assert probe(t, d, V4, 5, 1.0, proto=17) is not None
    assert probe(t, d, "198.51.100.8", 5, 1.0) is None  # still reported, its ban did not end


def test_rearm_keeps_an_unreported_source_counting() -> None:
    t, d = setup(trigger=2)
    assert probe(t, d, V4, 1, 0.0) is None
    assert t.rearm(packed(V4)) == []
    assert probe(t, d, V4, 2, 0.1) is None
    assert probe(t, d, V4, 3, 0.2) is not None  # the third probe, as without the re-arm


def test_rearm_with_a_trigger_counts_afresh() -> None:
    t, d = setup(trigger=2)
    for i in range(3):
        probe(t, d, V4, i, i * 0.1)
    t.rearm(packed(V4))
    assert probe(t, d, V4, 10, 1.0) is None and probe(t, d, V4, 11, 1.1) is None
    assert probe(t, d, V4, 12, 1.2) is not None  # a new decision needs the trigger again, as the first did


def test_rearm_networks_and_everything() -> None:
    t, d = setup()
    for src in ("2001:db8:1::5", "2001:db8:1::6", "2001:db8:2::5", V4):
        assert probe(t, d, src, 1, 0.0) is not None
    net = ipaddress.ip_network("2001:db8:1::/64")
    gone = t.rearm_networks([(16, int(net.network_address), int(net.broadcast_address))])
    assert sorted(s.key[:-1] for s in gone) == sorted([packed("2001:db8:1::5"), packed("2001:db8:1::6")])
    assert len(t.rearm_networks([], everything=True)) == 2
    assert probe(t, d, "2001:db8:2::5", 2, 1.0) is not None


def test_rearm_frees_bitmaps() -> None:
    t, d = setup()
    for port in range(1, 200):
        probe(t, d, V4, port, 0.0)
    assert t.bitmaps == 1
    t.rearm(packed(V4))
    assert t.bitmaps == 0 and len(t) == 0


# ----------------------------------------------------------------------------- the sockets

@pytest.fixture
def sock_path(tmp_path: Path) -> str:
    return str(tmp_path / "rearm.sock")


def test_sender_to_socket(sock_path: str) -> None:
    rx = RearmSocket(sock_path, max_size=M.MAX_DATAGRAM)
    try:
        assert os.stat(sock_path).st_mode & 0o777 == 0o660
        tx = RearmSender(sock_path)
        tx.queue(V4)
        tx.queue("::ffff:198.51.100.7")  # the same address: sent once
        tx.queue(V6)
        tx.queue("not an address")
        assert tx.pending
        tx.flush()
        assert not tx.pending and tx.sent == 1
        ((data, why),) = rx.receive()
        assert why == "" and data is not None
        assert M.decode(data).addresses == [packed(V4), packed(V6)]
        assert rx.receive() == []
        tx.close()
    finally:
        rx.close()
    assert not os.path.exists(sock_path)


def test_sender_without_detector_drops_and_never_blocks(sock_path: str) -> None:
    tx = RearmSender(sock_path)
    tx.queue(V4)
    tx.flush()
    assert not tx.pending and tx.dropped == 1
    tx.close()


def test_sender_keeps_what_a_full_queue_refuses(sock_path: str) -> None:
    rx = RearmSocket(sock_path, max_size=M.MAX_DATAGRAM)
    tx = RearmSender(sock_path)
    try:
        for i in range(20000):
            tx.queue(str(ipaddress.IPv4Address((10 << 24) + i)))
        tx.flush()
        sent = tx.sent
        assert sent >= 1
        got = 0
        for _ in range(1000):
            for data, _why in rx.receive():
                assert data is not None
                got += len(M.decode(data).addresses)
            if not tx.pending:
                break
            tx.flush()
        for data, _why in rx.receive():
            assert data is not None
            got += len(M.decode(data).addresses)
        assert got == 20000
    finally:
        tx.close()
        rx.close()


def test_sender_queue_is_bounded(sock_path: str) -> None:
    tx = RearmSender(sock_path)
    for i in range(MAX_PENDING + 1):
        tx.queue(str(ipaddress.IPv4Address((10 << 24) + i)))
    rx = RearmSocket(sock_path, max_size=M.MAX_DATAGRAM)
    try:
        tx.flush()
        ((data, _),) = rx.receive()
        assert data == b"PSREARM1 *"
    finally:
        tx.close()
        rx.close()


def test_socket_refuses_oversized_and_foreign_senders(sock_path: str) -> None:
    rx = RearmSocket(sock_path, max_size=M.MAX_DATAGRAM)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.sendto(b"x" * (M.MAX_DATAGRAM + 10), sock_path)
            # Credentials of another user (root may state any; the kernel checks that it could be them).
            creds = struct.pack("iII", os.getpid(), 65534, 65534)
            s.sendmsg([b"PSREARM1 198.51.100.7"], [(socket.SOL_SOCKET, socket.SCM_CREDENTIALS, creds)], 0,
                      sock_path)
        assert rx.receive() == [(None, f"datagram longer than {M.MAX_DATAGRAM} bytes"),
                                (None, "sender uid 65534 is neither root nor the detector's user")]
    finally:
        rx.close()


def test_a_live_socket_is_not_replaced_and_a_stale_one_is(sock_path: str, tmp_path: Path) -> None:
    rx = RearmSocket(sock_path, max_size=M.MAX_DATAGRAM)
    try:
        with pytest.raises(OSError, match="another process"):
            RearmSocket(sock_path, max_size=M.MAX_DATAGRAM)
    finally:
        rx.sock.close()  # dies without removing its file
    again = RearmSocket(sock_path, max_size=M.MAX_DATAGRAM)
    again.close()
    plain = tmp_path / "plain"
    plain.write_text("x")
    with pytest.raises(OSError, match="not a socket"):
        RearmSocket(str(plain), max_size=M.MAX_DATAGRAM)


# ----------------------------------------------------------------------------- the detector's handler

class ListSink:
    name = "list"

    def __init__(self) -> None:
        self.records: list[R.Record] = []

    def write(self, record: R.Record) -> None:
        self.records.append(record)

    def reopen(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_detector_rearms_what_the_responder_names(tmp_path: Path) -> None:
    """Addresses map to the network the detector counts by (ipv6_prefix 64); a ban network covers its sources;
    a refused message changes nothing and is counted; each forgotten source with probes owes a summary."""
    cfg = DetectorConfig(rearm_socket=str(tmp_path / "rearm.sock"), wake_socket="")
    sink = ListSink()
    det = Detector(cfg, sink=sink)
    det._open_rearm()
    assert det.rearm_sock is not None
    sources = ["198.51.100.7", "198.51.100.8", "2001:db8:1:2::7", "2001:db8:9:1::1", "2001:db8:9:2::1"]
    for n, src in enumerate(sources):
        raw = packed(src)
        for i in range(2):  # one probe reported, one more folded
            st_ = det.tracker.hit(det.pipe.netof(raw) + b"\x06", DST, 6, 1 + i, "syn", "stcp", 0, False, float(n))
            if st_ is not None:
                st_.src = raw
                assert det.decider.on_trigger(st_, float(n), 1.0) is not None
    tx = RearmSender(cfg.rearm_socket)
    try:
        tx.queue("198.51.100.7")  # an address
        tx.queue("2001:db8:1:2::99")  # another address of a /64 the detector counts as one source
        tx.queue("2001:db8:9::/48")  # a network ban (escalated): both /64s inside
        tx.flush()
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.sendto(b"PSREARM1 198.51.100.8;", cfg.rearm_socket)
        det.on_rearm(det.rearm_sock)
    finally:
        tx.close()
        det._close_rearm()
        det.waker.close()
    assert det.counters.rearm_msgs == 1 and det.counters.rearm_bad == 1 and det.counters.rearmed == 4
    assert "target 1" in det._rearm_problem
    left = {R.canonical_address(ipaddress.ip_address(k[:-1]).compressed) for k in det.tracker._triggered}
    assert left == {"198.51.100.8"}
    summaries = [r for r in sink.records if r.event == "summary"]
    assert len(summaries) == 4 and all(r.get(R.F_DETAIL) == "rearmed" for r in summaries)


# ----------------------------------------------------------------------------- the responder ends a ban first

class ScriptRunner:
    def __init__(self) -> None:
        self.scripts: list[str] = []

    def run(self, argv: Sequence[str], *, input: str | None = None, timeout: float | None = None) -> Result:
        if input is not None:
            self.scripts.append(input)
        return Result(tuple(argv), 0)


def test_nft_elements_outlive_the_ban_by_the_grace() -> None:
    """The kernel's timeout is the ban's time plus KERNEL_GRACE: the responder's expiry (which re-arms the
    detector) comes first, the kernel's stays the safety net."""
    runner = ScriptRunner()
    ex = Executor(ROOT / "actions.d", lambda *a, **k: None, runner)
    ex.configure(JailConfig(name="scan", where="x", enabled=True, filter="portsentinel",
                            actions=[ActionRef("nftables", {"name": "scan"}, "x")]))
    now = time.time()
    ex.ban_many([Ban("scan", V4, now, now + 600), Ban("scan", V6, now, -1)], now=now)
    (script,) = runner.scripts
    assert f"{V4} timeout {600 + KERNEL_GRACE}s" in script
    assert V6 in script and f"{V6} timeout" not in script  # forever stays forever


def test_ephemeral_port_range(tmp_path: Path) -> None:
    (tmp_path / "ipv4").mkdir()
    (tmp_path / "ipv4" / "ip_local_port_range").write_text("40000\t50000\n")
    assert procnet.ephemeral_ports(str(tmp_path)) == (40000, 50000)
    (tmp_path / "ipv4" / "ip_local_port_range").write_text("junk\n")
    assert procnet.ephemeral_ports(str(tmp_path)) == (32768, 60999)
    assert procnet.ephemeral_ports(str(tmp_path / "missing")) == (32768, 60999)
