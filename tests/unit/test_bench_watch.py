"""bench/responder_probe.py's watch mode: when is a source blocked (BlockWatch), decided from probes alone.

The benchmarks' "all in force" figures come from this decision. It used to be "no answer for ``quiet`` seconds
by the clock", which a loaded machine fakes: the watcher itself not scheduled for 50 ms right after an answered
probe made it stop with "never blocked" (or a bogus early time) before the responder had banned anything.
"""

from __future__ import annotations

from bench.responder_probe import BlockWatch, silent


def sent(w: BlockWatch, times: list[float], answered: bool) -> list[int]:
    numbers = [w.probe(t) for t in times]
    if answered:
        for n in numbers:
            w.answered(n)
    return numbers


def test_a_pause_of_the_watcher_after_an_answered_probe_is_no_block() -> None:
    w = BlockWatch(quiet=0.05)
    sent(w, [0.000, 0.001, 0.002], answered=True)
    # the watcher is not scheduled for 300 ms: no probe was sent meanwhile, so nothing went unanswered
    assert w.blocked() is None
    sent(w, [0.302], answered=True)  # the next probe is answered: still not blocked
    assert w.blocked() is None
    assert abs(w.max_gap - 0.300) < 1e-9  # the watcher's own pause is reported
    assert w.result("192.0.2.1")["first_blocked"] is None


def test_a_pause_then_unanswered_probes_need_the_quiet_span_and_enough_probes() -> None:
    w = BlockWatch(quiet=0.05, min_probes=5)
    sent(w, [0.000, 0.001], answered=True)
    sent(w, [0.002, 0.400], answered=False)  # two probes 0.4 s apart (a pause): their answers may be on the way
    assert w.blocked() is None
    sent(w, [0.401, 0.402], answered=False)
    assert w.blocked() is None  # four probes
    sent(w, [0.403], answered=False)
    assert w.blocked() == 0.002  # five, spanning 0.401 s


def test_a_real_block_is_dated_by_the_first_unanswered_probe() -> None:
    w = BlockWatch(quiet=0.25)
    sent(w, [i / 1000 for i in range(10)], answered=True)
    first = 10 / 1000
    for i in range(10, 10 + 250):
        sent(w, [i / 1000], answered=False)
        assert w.blocked() is None
    sent(w, [260 / 1000], answered=False)
    assert w.blocked() == first
    r = w.result("192.0.2.1")
    assert r["first_blocked"] == first and r["last_answered"] == 9 / 1000 and r["probes"] == 261


def test_a_late_answer_counts_for_its_own_probe_only() -> None:
    w = BlockWatch(quiet=0.01, min_probes=2)
    nums = sent(w, [0.0, 0.001, 0.002, 0.020, 0.030], answered=False)
    assert not w.ready and w.blocked() is None  # never answered: not ready, so never "blocked"
    w.answered(nums[3])  # probe 3 answered late
    w.answered(nums[1])  # an older answer does not move the mark back
    w.answered(99)  # no such probe (a stray SYN-ACK)
    assert w.ready and w.last_ok == nums[3]
    assert w.blocked() is None  # only one probe after it
    sent(w, [0.041], answered=False)
    assert w.blocked() == 0.030


def test_silent_needs_probes_sent_not_time_passed() -> None:
    times = [0.000, 0.001, 0.002]
    # the last answer was the probe sent at 0.002; the prober then paused: nothing sent after it, no silence
    assert not silent(times, 0.002, quiet=0.05)
    times += [0.300, 0.301]  # two probes after the pause, unanswered so far: their answers may be on the way
    assert not silent(times, 0.002, quiet=0.05)
    times += [0.302, 0.303, 0.304]
    assert not silent(times, 0.002, quiet=0.05)  # five, but 4 ms of probes: the pause before them is no silence
    times += [0.351]
    assert silent(times, 0.002, quiet=0.05)  # five or more, spanning >= quiet
    assert not silent(times, 0.302, quiet=0.05)  # since a later answer: three probes
