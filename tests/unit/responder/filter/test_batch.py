"""responder.filter.batch and .worker: many lines at once give what examine_line gives line by line.

On fail2ban's own sample logs (every stock filter with a sample file, every ``filterOptions`` set in it, its
whole file in one run so sessions and date memory carry across lines), three ways must agree verdict for
verdict and leave the filter in the same state: ``examine_line`` per line, :func:`examine_lines` serially,
and :func:`examine_lines` with the regexes in a worker process (small chunks, so many go through the pipe).
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from portsentinel.responder.filter import batch
from portsentinel.responder.filter.batch import examine_lines
from portsentinel.responder.filter.filters import MAX_LINE, Filter, FilterError, Verdict, load_filter
from portsentinel.responder.filter.testfilter import run_lines, to_json
from portsentinel.responder.filter.worker import Worker, WorkerError
from tests.samples.f2b_suite import LOGS, STOCK_DIR, TEST_NOW, fail2ban_clock

_OPTIONS = re.compile(r"^#+ ?filterOptions:(.+)$")


def option_sets(name: str) -> list[dict[str, str]]:
    """Every filter option set the sample file names (journal-only ones left out), and the defaults."""
    out: list[dict[str, str]] = [{}]
    for line in (LOGS / name).read_text(encoding="utf-8", errors="replace").splitlines():
        m = _OPTIONS.match(line)
        if m is None:
            continue
        data = json.loads(m.group(1))
        for one in data if isinstance(data, list) else [data]:
            opts = {k: str(v) for k, v in one.items() if not k.startswith("test.")}
            if opts.get("logtype") != "journal" and opts not in out:
                out.append(opts)
    return out


def cases() -> list[tuple[str, dict[str, str]]]:
    names = sorted(p.stem for p in STOCK_DIR.glob("*.conf") if (LOGS / p.stem).exists())
    return [(n, o) for n in names for o in option_sets(n)]


def sample_lines(name: str) -> list[str]:
    text = (LOGS / name).read_text(encoding="utf-8", errors="replace")
    return [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]


Key = tuple[Any, ...]


def key(v: Verdict) -> Key:
    f = v.failure
    return (v.kind, v.reason, v.host, v.regex, v.time, v.user, v.also,
            None if f is None else (f.host, f.time, f.matched, f.regex))


def fields(v: Verdict) -> dict[str, Any]:
    return {k: sorted(x) if isinstance(x, set) else x for k, x in v.fields.items()}


def state(flt: Filter) -> Key:
    st = flt.line_state
    dates = flt.line_rules.dates
    sessions = [(k, sorted(map(str, f.items())), t) for k, (f, t) in st.sessions.items()]
    return (sessions, st.last_date, st.last_date_text, st.buffer,
            None if dates is None else (dates.last.source if dates.last else None,
                                        [(t.hits, t.distance) for t in dates.templates]))


def run(flt: Filter, way: Callable[[Filter, list[str]], Iterator[Verdict]], lines: list[str]
        ) -> tuple[list[Key], list[dict[str, Any]], Key]:
    got = list(way(flt, lines))
    keys = [key(v) for v in got]
    return keys, [fields(v) for v in got], state(flt)


def by_line(flt: Filter, lines: list[str]) -> Iterator[Verdict]:
    return (flt.examine_line(line, TEST_NOW) for line in lines)


def serial(flt: Filter, lines: list[str]) -> Iterator[Verdict]:
    return examine_lines(flt, lines, TEST_NOW, parallel=False)


def parallel(flt: Filter, lines: list[str]) -> Iterator[Verdict]:
    return examine_lines(flt, lines, TEST_NOW, parallel=True, after=3)


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(batch, "CHUNK_LINES", 5)


def test_every_sample_log_alike_serial_and_parallel(small_chunks: None) -> None:
    compared = batched = matched = 0
    with fail2ban_clock():
        for name, opts in cases():
            try:
                flts = [load_filter(STOCK_DIR, name, opts) for _ in range(3)]
            except FilterError:
                continue
            lines = sample_lines(name)
            lines.insert(len(lines) // 2, "Jan  1 00:00:00 host x: " + "y" * MAX_LINE)
            want = run(flts[0], by_line, lines)
            assert run(flts[1], serial, lines) == want, (name, opts)
            assert run(flts[2], parallel, lines) == want, (name, opts)
            compared += 1
            batched += batch.batched(flts[0])
            matched += sum(k[0] == "matched" for k in want[0])
    assert compared > 100 and batched > 80 and matched > 1000, (compared, batched, matched)


def test_sshd_sessions_cross_chunks(small_chunks: None) -> None:
    """sshd's <F-MLFID> sessions: a session's lines fall into different chunks, the worker's or not."""
    with fail2ban_clock():
        for mode in ("normal", "aggressive", "ddos", "extra"):
            flts = [load_filter(STOCK_DIR, "sshd", {"mode": mode}) for _ in range(3)]
            lines = sample_lines("sshd") * 3
            want = run(flts[0], by_line, lines)
            assert run(flts[1], serial, lines) == want
            assert run(flts[2], parallel, lines) == want
            assert flts[2].line_state.sessions and any(k[0] == "matched" for k in want[0])


@pytest.mark.parametrize("args", [{"ignoreregex": "for (?:invalid user )?ROOT from"},  # tried first
                                  {"failregex": r"^Failed \S+ for .* from <HOST>", "ignoreregex": "port 12345"}])
def test_ignoreregex_alike(small_chunks: None, args: dict[str, str]) -> None:
    with fail2ban_clock():
        flts = [load_filter(STOCK_DIR, "sshd", args) for _ in range(3)]
        lines = sample_lines("sshd")
        want = run(flts[0], by_line, lines)
        assert run(flts[1], serial, lines) == want
        assert run(flts[2], parallel, lines) == want
        kinds = [k[0] for k in want[0]]
        assert "ignored" in kinds and "matched" in kinds


def test_auto_stays_serial_for_a_small_input_or_no_spare_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[int] = []
    real_start = Worker.start

    def start(work: Callable[[Any], Any]) -> Worker | None:
        started.append(1)
        return real_start(work)

    monkeypatch.setattr(Worker, "start", start)
    monkeypatch.setattr(batch, "CHUNK_LINES", 10)
    flt = load_filter(STOCK_DIR, "sshd", {})
    lines = sample_lines("sshd")
    list(examine_lines(flt, lines, TEST_NOW, after=len(lines) + 1))
    assert not started
    monkeypatch.setattr(batch, "spare_cpu", lambda: False)
    list(examine_lines(flt, lines, TEST_NOW, after=0))
    assert not started
    monkeypatch.setattr(batch, "spare_cpu", lambda: True)
    list(examine_lines(flt, lines, TEST_NOW, after=0))
    assert started


def test_test_filter_run_alike(small_chunks: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """``portsentinel test-filter``'s run (comments and blank lines skipped, numbers kept) both ways."""
    monkeypatch.setattr(batch, "PARALLEL_AFTER", 7)
    started: list[int] = []
    real_start = Worker.start

    def start(work: Callable[[Any], Any]) -> Worker | None:
        started.append(1)
        return real_start(work)

    monkeypatch.setattr(Worker, "start", start)
    lines = (LOGS / "sshd").read_text(encoding="utf-8", errors="replace").splitlines(keepends=True) * 2
    with fail2ban_clock():
        docs = [to_json(run_lines(load_filter(STOCK_DIR, "sshd", {}), lines, now=TEST_NOW, keep=None,
                                  parallel=way)) for way in (False, True)]
    assert docs[0] == docs[1] and started == [1]
    doc = json.loads(docs[0])
    assert doc["skipped"] > 10 and doc["matched"] > 50 and len(doc["entries"]) == doc["lines"]


def _boom(items: list[Any]) -> list[Any]:
    if "boom" in items:
        raise ValueError("boom in the worker")
    return [len(x) for x in items]


def _reaped(pid: int) -> bool:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return False


def test_worker_results_in_order_and_errors_raised() -> None:
    w = Worker.start(_boom)
    assert w is not None
    chunks = [(["x" * i for i in range(n)], n) for n in range(1, 40)]
    got = [(extra, res) for _items, extra, res in w.run(iter(chunks))]
    assert got == [(n, list(range(n))) for n in range(1, 40)]
    assert _reaped(w.pid)

    w = Worker.start(_boom)
    assert w is not None
    with pytest.raises(WorkerError, match="boom in the worker"):
        list(w.run(iter([(["a"], 0), (["boom"], 1), (["c"], 2)])))
    assert _reaped(w.pid)


PARENT = os.getpid()


def _slow_child(items: list[Any]) -> list[Any]:
    if os.getpid() != PARENT:
        time.sleep(0.02)  # a child that gets little CPU
    return [(os.getpid(), x) for x in items]


def test_work_shared_in_order_when_the_child_is_slow() -> None:
    w = Worker.start(_slow_child)
    assert w is not None
    chunks = [([n * 10 + i for i in range(3)], n) for n in range(200)]
    got = list(w.run(iter(chunks)))
    assert [extra for _items, extra, _res in got] == list(range(200))
    assert [x for _i, _e, res in got for _pid, x in res] == [n * 10 + i for n in range(200) for i in range(3)]
    done_by = {pid for _i, _e, res in got for pid, _x in res}
    assert done_by == {PARENT, w.pid}  # both did some: the parent did not wait for every chunk
    assert _reaped(w.pid)


def test_worker_stopped_when_the_run_is_left_early() -> None:
    w = Worker.start(_boom)
    assert w is not None
    gen = w.run(iter([(["a"], i) for i in range(100)]))
    assert next(gen)[1] == 0
    gen.close()
    assert _reaped(w.pid)
