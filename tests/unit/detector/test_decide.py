"""detector.decide: tracker transitions → records that follow the shared schema, under a record cap."""

from __future__ import annotations

import ipaddress

import pytest

from portsentinel import record as R
from portsentinel.detector.decide import Decider, RateLimit, addr_text
from portsentinel.detector.tracker import Tracker

V4, V6 = "198.51.100.7", "2001:db8::7"
DST4, DST6 = "203.0.113.1", "2001:db8::1"


def packed(text: str) -> bytes:
    return ipaddress.ip_address(text).packed


def setup(trigger: int = 0, window: float = 60.0, summary: float = 30.0, rate: int = 50,
          resolve: dict[str, str] | None = None, cap: int = 65536) -> tuple[Tracker, Decider]:
    t = Tracker(trigger=trigger, window=window, summary_interval=summary, max_sources=cap)
    d = Decider(t, window=window, max_records_per_second=rate, ifname=lambda i: f"if{i}",
                resolve=(lambda a: resolve.get(a, "")) if resolve is not None else None)
    return t, d


def probe(t: Tracker, d: Decider, src: str, port: int, now: float, *, proto: int = 6, scan: str = "syn",
          mode: str = "stcp", dst: str = DST4, verified: bool = False) -> R.Record | None:
    k = packed(src) + (b"\x06" if proto == 6 else b"\x11")
    st = t.hit(k, packed(dst), proto, port, scan, mode, 2, verified, now)
    if st is None:
        return None
    return d.on_trigger(st, now, 1_700_000_000.0 + now)


def test_addr_text() -> None:
    assert addr_text(packed(V4)) == V4
    assert addr_text(packed(V6)) == V6
    assert addr_text(packed("::ffff:198.51.100.7")) == V4
    assert addr_text(packed("2001:0db8:0000::0007")) == V6


def test_scan_record_fields() -> None:
    t, d = setup()
    rec = probe(t, d, V4, 143, 1.0)
    assert rec is not None
    assert rec.fields == {
        "MESSAGE": f"attackalert: TCP SYN/Normal scan from host: {V4}/{V4} to TCP port: 143",
        "MESSAGE_ID": R.MESSAGE_IDS[R.Event.SCAN],
        "PRIORITY": "4",
        "SYSLOG_IDENTIFIER": "portsentinel-detector",
        "PS_EVENT": "scan",
        "PS_SRC": V4,
        "PS_DST": DST4,
        "PS_IFACE": "if2",
        "PS_PROTO": "tcp",
        "PS_PORT": "143",
        "PS_SCAN": "syn",
        "PS_MODE": "stcp",
        "PS_VERIFIED": "0",
        "PS_HITS": "1",
        "PS_PORTS": "1",
        "PS_WINDOW": "60",
        "PS_TIME": "1700000001.000000",
    }
    assert R.validate(rec.fields) == rec
    assert R.from_json_line(R.to_json_line(rec)) == rec


@pytest.mark.parametrize("src,dst,shown", [(V6, DST6, V6), ("::ffff:198.51.100.9", "::ffff:203.0.113.1",
                                                              "198.51.100.9")])
def test_ipv6_and_mapped_sources(src: str, dst: str, shown: str) -> None:
    t, d = setup()
    rec = probe(t, d, src, 22, 0.0, proto=17, scan="udp", mode="audp", dst=dst)
    assert rec is not None
    assert (rec.src, rec.get("PS_PROTO"), rec.get("PS_SCAN"), rec.get("PS_MODE")) == (shown, "udp", "udp", "audp")
    assert rec.get("MESSAGE") == f"attackalert: UDP scan from host: {shown}/{shown} to UDP port: 22"
    assert rec.get("PS_DST") == R.canonical_address(dst)


def test_verified_connect() -> None:
    t, d = setup()
    rec = probe(t, d, V4, 1, 0.0, scan="connect", mode="tcp", verified=True)
    assert rec is not None and rec.get("PS_VERIFIED") == "1"
    assert rec.get("MESSAGE").startswith("attackalert: TCP Connect scan from host: ")


@pytest.mark.parametrize("scan", ["syn", "fin", "null", "xmas", "ack", "maimon", "other"])
def test_every_tcp_kind_validates(scan: str) -> None:
    t, d = setup()
    rec = probe(t, d, V4, 1, 0.0, scan=scan, mode="atcp")
    assert rec is not None and rec.get("PS_SCAN") == scan and rec.get("PS_MODE") == "atcp"


def test_trigger_counts_show_in_the_record() -> None:
    t, d = setup(trigger=3)
    assert [probe(t, d, V4, p, p * 0.1) for p in (1, 2, 2)] == [None, None, None]
    rec = probe(t, d, V4, 9, 1.0)
    assert rec is not None and (rec.get("PS_HITS"), rec.get("PS_PORTS"), rec.get("PS_PORT")) == ("4", "3", "9")


def test_summary_record() -> None:
    t, d = setup(summary=30.0)
    assert probe(t, d, V4, 1, 0.0) is not None
    for p in range(2, 101):
        assert probe(t, d, V4, p, p * 0.1) is None
    assert d.tick(20.0, 0.0) == []
    (rec,) = d.tick(30.0, 1_700_000_030.0)
    assert rec.event == "summary" and rec.get("PRIORITY") == "4"
    assert rec.get("MESSAGE_ID") == R.MESSAGE_IDS[R.Event.SUMMARY]
    assert rec.get("MESSAGE") == f"attacksummary: host: {V4} probes: 100 ports: 100 since first probe"
    assert (rec.get("PS_HITS"), rec.get("PS_PORTS"), rec.get("PS_PORT")) == ("100", "100", "1")
    assert R.validate(rec.fields) == rec


def test_summary_marks_a_lower_bound() -> None:
    t = Tracker(trigger=0, window=60.0, summary_interval=1.0, max_sources=10, max_bitmaps=0)
    d = Decider(t, window=60.0, max_records_per_second=50, ifname=str)
    assert probe(t, d, V4, 1, 0.0) is not None
    for p in range(2, 200):
        probe(t, d, V4, p, 0.5)
    (rec,) = d.tick(2.0, 0.0)
    assert rec.get("PS_PORTS") == "64" and "ports: 64+ since" in rec.get("MESSAGE")


def test_rate_limit_defers_and_the_source_triggers_later() -> None:
    t, d = setup(rate=2)
    got = [probe(t, d, f"198.51.100.{n}", 1, 10.0) for n in range(1, 6)]
    assert [r is not None for r in got] == [True, True, False, False, False]
    assert d.suppressed == 3
    # Still inside the same instant: still deferred.
    assert probe(t, d, "198.51.100.3", 2, 10.0) is None and d.suppressed == 4
    # A second later the bucket holds two tokens again: the deferred sources are reported on their next probe.
    later = [probe(t, d, f"198.51.100.{n}", 3, 11.0) for n in (3, 4, 5)]
    assert [r is not None for r in later] == [True, True, False]
    rec = later[0]
    assert rec is not None and rec.src == "198.51.100.3" and rec.get("PS_HITS") == "3" and rec.get("PS_PORT") == "3"
    # Reported sources stay quiet; only the one still deferred tries again.
    assert probe(t, d, "198.51.100.1", 4, 12.0) is None
    assert probe(t, d, "198.51.100.5", 4, 12.0) is not None
    assert d.suppressed == 5


def test_rate_limit_bucket() -> None:
    rl = RateLimit(3)
    assert [rl.allow(0.0) for _ in range(4)] == [True, True, True, False]
    assert rl.allow(0.34) and not rl.allow(0.34)
    assert [rl.allow(100.0) for _ in range(4)] == [True, True, True, False]  # burst capped at the rate
    assert RateLimit(0).rate == 1.0


def test_spoofed_flood_is_capped() -> None:
    t, d = setup(rate=50, cap=1000)
    records = 0
    for n in range(100_000):  # 100,000 sources over 10 s
        if probe(t, d, str(ipaddress.IPv4Address(0x0A000000 + n)), 1, n * 1e-4) is not None:
            records += 1
    assert records <= 50 * 10 + 50
    assert len(t) == 1000 and t.evictions == 99_000


@pytest.mark.parametrize("proto,scan", [(6, "syn"), (17, "udp")])
def test_full_port_range_scan_is_a_handful_of_records(proto: int, scan: str) -> None:
    t, d = setup(trigger=0, window=60.0, summary=30.0)
    records: list[R.Record] = []
    now, next_tick = 0.0, 1.0
    for p in range(1, 65536):  # 65,535 probes over 30 s, the service's one-second tick in between
        now = p * (30.0 / 65535)
        rec = probe(t, d, V4, p, now, proto=proto, scan=scan, mode="atcp" if proto == 6 else "audp")
        if rec is not None:
            records.append(rec)
        if now >= next_tick:
            records += d.tick(now, now)
            next_tick = now + 1.0
    for s in range(31, 200):  # then quiet
        records += d.tick(float(s), float(s))
    assert 1 <= len(records) <= 10, [r.fields for r in records]
    assert records[0].event == "scan" and all(r.event == "summary" for r in records[1:])
    last = records[-1]
    assert (last.get("PS_HITS"), last.get("PS_PORTS")) == ("65535", "65535")
    assert all(R.validate(r.fields) == r for r in records)


def test_shutdown_style_final_tick() -> None:
    """service.shutdown sets window = -1 so every source counts as quiet: the final summaries come out."""
    t, d = setup()
    assert probe(t, d, V4, 1, 0.0) is not None
    probe(t, d, V4, 2, 0.1)
    t.window = -1.0
    (rec,) = d.tick(0.2, 0.0)
    assert rec.event == "summary" and rec.get("PS_HITS") == "2"


def test_safe_resolved_name_is_used() -> None:
    t, d = setup(resolve={V4: "scanner.example.org"})
    rec = probe(t, d, V4, 143, 0.0)
    assert rec is not None
    assert rec.get("PS_SRC_NAME") == "scanner.example.org"
    assert rec.get("MESSAGE") == \
        f"attackalert: TCP SYN/Normal scan from host: scanner.example.org/{V4} to TCP port: 143"


@pytest.mark.parametrize("name", ["1.2.3.4", "a;b", "$(reboot)", "x" * 300, "evil host", "a..b", "10.0.0.1.",
                                  "::1", "é.example"])
def test_hostile_resolved_name_is_dropped(name: str) -> None:
    t, d = setup(resolve={V4: name})
    rec = probe(t, d, V4, 143, 0.0)
    assert rec is not None
    assert "PS_SRC_NAME" not in rec.fields
    assert rec.get("MESSAGE") == f"attackalert: TCP SYN/Normal scan from host: {V4}/{V4} to TCP port: 143"
