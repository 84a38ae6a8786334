"""detector.tracker: SCAN_TRIGGER, the window, summaries, the LRU cap, distinct ports (time passed in)."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from portsentinel.detector.tracker import SourceState, Tracker

DST = bytes([203, 0, 113, 1])


def key(n: int, proto: int = 6) -> bytes:
    return bytes([198, 51, (n >> 8) & 0xFF, n & 0xFF]) + (b"\x06" if proto == 6 else b"\x11")


def make(trigger: int = 0, window: float = 60.0, summary: float = 30.0, cap: int = 1000,
         bitmaps: int = 2048) -> Tracker:
    return Tracker(trigger=trigger, window=window, summary_interval=summary, max_sources=cap, max_bitmaps=bitmaps)


def hit(t: Tracker, k: bytes, port: int, now: float, proto: int = 6) -> SourceState | None:
    return t.hit(k, DST, proto, port, "syn" if proto == 6 else "udp", "stcp" if proto == 6 else "sudp", 3,
                 False, now)


# ----------------------------------------------------------------------------- SCAN_TRIGGER

def test_trigger_zero_reacts_on_first_probe() -> None:
    t = make(trigger=0)
    st = hit(t, key(1), 143, 0.0)
    assert st is not None
    assert (st.hits, st.nports, st.port, st.proto, st.scan, st.mode, st.ifindex, st.dst) == (
        1, 1, 143, 6, "syn", "stcp", 3, DST)


@pytest.mark.parametrize("trigger", [1, 2, 5])
def test_trigger_n_reacts_on_probe_n_plus_one(trigger: int) -> None:
    t = make(trigger=trigger)
    for i in range(trigger):
        assert hit(t, key(1), 100 + i, float(i)) is None
    st = hit(t, key(1), 500, float(trigger))
    assert st is not None and st.hits == trigger + 1
    assert st.port == 500  # the probe that crossed the trigger is the one named


def test_trigger_counts_probes_not_ports() -> None:
    t = make(trigger=2)
    assert hit(t, key(1), 143, 0.0) is None
    assert hit(t, key(1), 143, 0.1) is None
    st = hit(t, key(1), 143, 0.2)
    assert st is not None and (st.hits, st.nports) == (3, 1)


def test_reported_source_triggers_once() -> None:
    t = make(trigger=0)
    st = hit(t, key(1), 1, 0.0)
    assert st is not None
    t.mark_reported(st, 0.0)
    assert all(hit(t, key(1), p, 0.01 * p) is None for p in range(2, 500))


def test_unreported_source_tries_again() -> None:
    """A trigger the caller did not report (record cap) is returned again on the next probe."""
    t = make(trigger=0)
    assert hit(t, key(1), 1, 0.0) is not None
    st = hit(t, key(1), 2, 0.5)
    assert st is not None and st.hits == 2 and st.port == 2


def test_sources_are_per_protocol_and_address() -> None:
    t = make(trigger=1)
    assert hit(t, key(1), 7, 0.0) is None
    assert hit(t, key(1, 17), 7, 0.0, proto=17) is None
    assert hit(t, key(2), 7, 0.0) is None
    assert len(t) == 3
    assert hit(t, key(1, 17), 9, 0.1, proto=17) is not None


# ----------------------------------------------------------------------------- window

def test_window_resets_an_untriggered_source() -> None:
    t = make(trigger=2, window=60.0)
    assert hit(t, key(1), 1, 0.0) is None
    assert hit(t, key(1), 2, 59.0) is None
    assert hit(t, key(1), 3, 61.0) is None  # first probe was 61 s ago: a new window starts
    st = t.get(key(1))
    assert st is not None and (st.hits, st.nports, st.first) == (1, 1, 61.0)
    assert hit(t, key(1), 4, 70.0) is None
    st = hit(t, key(1), 5, 80.0)
    assert st is not None and st.hits == 3


def test_slow_probes_never_trigger() -> None:
    t = make(trigger=1, window=10.0)
    for i in range(50):
        assert hit(t, key(1), i + 1, i * 11.0) is None


def test_window_reset_frees_the_bitmap() -> None:
    t = make(trigger=1000, window=60.0)
    for p in range(1, 200):
        hit(t, key(1), p, 1.0)
    assert t.bitmaps == 1
    hit(t, key(1), 1, 100.0)
    st = t.get(key(1))
    assert st is not None and st.bitmap is None and st.nports == 1 and t.bitmaps == 0


# ----------------------------------------------------------------------------- summaries

def _triggered(t: Tracker, k: bytes, now: float) -> SourceState:
    st = hit(t, k, 1, now)
    assert st is not None
    t.mark_reported(st, now)
    return st


def test_summary_every_interval_while_probing() -> None:
    t = make(trigger=0, window=60.0, summary=30.0)
    st = _triggered(t, key(1), 0.0)
    for i in range(1, 100):
        hit(t, key(1), i + 1, i * 0.25)  # until 24.75 s
    assert t.due(10.0) == []
    assert t.due(29.9) == []
    out = t.due(30.0)
    assert out == [("summary", st)] and st.hits == 100 and st.reported_hits == 100
    assert t.due(31.0) == []  # nothing new
    hit(t, key(1), 5000, 40.0)
    assert t.due(50.0) == []  # interval counts from the last summary
    assert t.due(60.0) == [("summary", st)]


def test_no_summary_without_new_probes() -> None:
    t = make(trigger=0)
    _triggered(t, key(1), 0.0)
    assert t.due(45.0) == []
    assert t.due(200.0) == []  # quiet: dropped, nothing to report
    assert len(t) == 0


def test_final_summary_when_quiet() -> None:
    t = make(trigger=0, window=60.0, summary=1000.0)
    st = _triggered(t, key(1), 0.0)
    hit(t, key(1), 2, 5.0)
    hit(t, key(1), 3, 10.0)
    assert t.due(70.0) == []  # last probe 60 s ago: not yet quiet
    assert t.due(70.5) == [("summary", st)]
    assert st.hits == 3 and len(t) == 0
    assert t.due(1000.0) == []


def test_untriggered_quiet_sources_are_dropped_silently() -> None:
    t = make(trigger=5)
    for n in range(10):
        hit(t, key(n), 1, float(n))
    assert len(t) == 10
    assert t.due(65.5) == []
    assert len(t) == 4  # sources last seen at 6..9 s are still inside the window
    assert t.due(1000.0) == [] and len(t) == 0


# ----------------------------------------------------------------------------- LRU cap

def test_eviction_at_the_cap_is_least_recent_and_counted() -> None:
    t = make(trigger=10, cap=3)
    for n in range(3):
        hit(t, key(n), 1, float(n))
    hit(t, key(0), 2, 3.0)  # key 0 is now the most recent
    hit(t, key(3), 1, 4.0)
    assert len(t) == 3 and t.evictions == 1
    assert t.get(key(1)) is None
    assert all(t.get(key(n)) is not None for n in (0, 2, 3))
    for n in range(4, 1004):
        hit(t, key(n), 1, 5.0)
    assert len(t) == 3 and t.evictions == 1001


def test_evicted_triggered_source_gets_its_final_summary() -> None:
    t = make(trigger=0, cap=2, summary=1000.0)
    st = _triggered(t, key(1), 0.0)
    hit(t, key(1), 2, 1.0)
    hit(t, key(2), 1, 2.0)
    hit(t, key(3), 1, 3.0)  # evicts key 1
    assert t.get(key(1)) is None and t.evictions == 1
    out = t.due(4.0)
    assert out == [("summary", st)] and st.hits == 2
    assert t.due(5.0) == []


def test_evicted_source_frees_its_bitmap() -> None:
    t = make(trigger=1000, cap=1)
    for p in range(1, 100):
        hit(t, key(1), p, 0.0)
    assert t.bitmaps == 1
    hit(t, key(2), 1, 0.0)
    assert t.bitmaps == 0 and t.evictions == 1


def test_memory_is_bounded_by_the_cap() -> None:
    t = make(trigger=0, cap=500)
    for n in range(20000):
        st = hit(t, key(n % 60000), 1, n * 1e-4)
        if st is not None and n % 2:
            t.mark_reported(st, n * 1e-4)
    assert len(t) == 500 and t.evictions == 19500
    t.due(3.0)
    assert len(t._triggered) <= 500


# ----------------------------------------------------------------------------- distinct ports

def test_distinct_ports_exact_then_bitmap() -> None:
    t = make(trigger=10**6)
    for p in range(1, 65):
        hit(t, key(1), p, 0.0)
        hit(t, key(1), p, 0.0)  # repeats do not count
    st = t.get(key(1))
    assert st is not None and st.nports == 64 and st.bitmap is None and st.hits == 128
    hit(t, key(1), 65, 0.0)
    assert st.bitmap is not None and st.ports == set() and st.nports == 65 and t.bitmaps == 1
    for p in range(1, 66):
        hit(t, key(1), p, 0.0)
    assert st.nports == 65 and st.ports_exact


@pytest.mark.parametrize("proto", [6, 17])
def test_full_port_range_counts_exactly(proto: int) -> None:
    t = make(trigger=10**6)
    for p in range(1, 65536):
        hit(t, key(1, proto), p, p * 1e-5, proto=proto)
    for p in range(65535, 0, -7):  # revisits do not count
        hit(t, key(1, proto), p, 1.0, proto=proto)
    st = t.get(key(1, proto))
    assert st is not None and st.nports == 65535 and st.ports_exact and t.bitmaps == 1
    hit(t, key(1, proto), 0, 1.0, proto=proto)
    assert st.nports == 65536


def test_bitmap_budget() -> None:
    t = make(trigger=10**6, bitmaps=1)
    for p in range(1, 101):
        hit(t, key(1), p, 0.0)
        hit(t, key(2), p, 0.0)
    one, two = t.get(key(1)), t.get(key(2))
    assert one is not None and two is not None
    assert t.bitmaps == 1
    assert (one.nports, one.ports_exact) == (100, True)
    assert two.bitmap is None and not two.ports_exact
    assert two.nports == 64  # a lower bound once the budget is spent
    assert len(two.ports) == 64
    # The budget comes back when the bitmap's owner goes away.
    assert t.due(1000.0) == [] and t.bitmaps == 0
    for p in range(1, 101):
        hit(t, key(3), p, 1000.0)
    three = t.get(key(3))
    assert three is not None and three.ports_exact and three.nports == 100 and t.bitmaps == 1


# ----------------------------------------------------------------------------- hit_again (the flood fast path)

def _snapshot(t: Tracker) -> tuple[object, ...]:
    states = [dataclasses.astuple(s) for s in t._sources.values()]  # in LRU order
    return (list(t._sources), states, sorted(t._triggered), t.bitmaps, t.evictions, len(t._finished))


def _two_trackers(trigger: int, bitmaps: int, others: int) -> tuple[Tracker, Tracker]:
    """Two identical trackers, key(1) triggered, reported and the most recently seen."""
    pair = []
    for _ in range(2):
        t = make(trigger=trigger, cap=8, bitmaps=bitmaps)
        for n in range(2, 2 + others):
            hit(t, key(n), 9, 0.0)
        for p in range(trigger):
            hit(t, key(1), 1000 + p, 0.0)
        crossed = hit(t, key(1), 7, 0.0)
        assert crossed is not None
        t.mark_reported(crossed, 0.0)
        pair.append(t)
    return pair[0], pair[1]


@settings(max_examples=400)
@given(st.integers(0, 3), st.sampled_from([0, 1, 2048]), st.integers(0, 7),
       st.lists(st.tuples(st.integers(0, 65535), st.floats(0, 100)), max_size=300))
def test_hit_again_is_hit_for_the_same_triggered_source(trigger: int, bitmaps: int, others: int,
                                                        probes: list[tuple[int, float]]) -> None:
    """What hit() does to a triggered source that is already the most recent, hit_again does: hits, last,
    ports (set, then bitmap, then a lower bound when the bitmap budget is spent), order, nothing returned."""
    slow, fast = _two_trackers(trigger, bitmaps, others)
    assert _snapshot(slow) == _snapshot(fast)
    st1 = fast.get(key(1))
    assert st1 is not None and st1.triggered
    now = 0.0
    for port, dt in probes:
        now += dt  # past the window too: a triggered source keeps its window
        assert hit(slow, key(1), port, now) is None
        fast.hit_again(st1, port, now)
        assert _snapshot(slow) == _snapshot(fast)


def test_hit_again_udp_port_code() -> None:
    slow, fast = make(trigger=0), make(trigger=0)
    for t in (slow, fast):
        crossed = hit(t, key(1, 17), 53, 0.0, proto=17)
        assert crossed is not None
        t.mark_reported(crossed, 0.0)
    st1 = fast.get(key(1, 17))
    assert st1 is not None
    for p in list(range(0, 200)) + [65535, 53, 0]:
        hit(slow, key(1, 17), p, 1.0, proto=17)
        fast.hit_again(st1, p + 65536, 1.0)
        assert _snapshot(slow) == _snapshot(fast)
    assert st1.bitmap is not None and st1.nports == 201 and st1.hits == 204


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(1, 131071), max_size=300), st.sampled_from([0, 1, 2048]))
def test_hit_run_is_hit_again_for_each(codes: list[int], bitmaps: int) -> None:
    """A run of probes counted by one hit_run ends as hit_again for each in order: hits, last, the exact port
    set or its bitmap (switching at the 65th distinct port, or inexact once the bitmap budget is spent)."""
    states = []
    for one_by_one in (True, False):
        t = make(trigger=0, bitmaps=bitmaps)
        st1 = hit(t, key(1), 1, 1.0)
        assert st1 is not None
        t.mark_reported(st1, 1.0)
        if one_by_one:
            for code in codes:
                t.hit_again(st1, code, 2.0)
        else:
            t.hit_run(st1, codes, 2.0)
        states.append((dataclasses.astuple(st1), t.bitmaps))
    assert states[0] == states[1]
    assert states[1][0][3] == 1 + len(codes)  # hits
