"""Many log lines through one filter: the verdicts :meth:`Filter.examine_line` gives line by line, in order.

A usual filter (``maxlines`` = 1, not fail2ban's check-all test mode) runs in three stages, a chunk of lines
at a time:

1. :func:`prepared`: each line's date cut out (:meth:`Filter.split_date`, which remembers the last date and
   template: in order);
2. :func:`scan`: the regexes on what is left (:func:`multiline.scan_single`: no state, so any process may do it);
3. :func:`settle`: sessions (``<F-MLFID>``), host and verdict (:func:`multiline.settle_single`: in order).

Serially the three follow each other. On a big input with a spare CPU, stage 2 runs in a worker process
(:mod:`.worker`: for the chunks it can take) while this one does 1 and 3 for the chunks before and after, and
stage 2 of the chunks the worker has no room for: the same functions on the same
data in the same order, so the same verdicts, and the filter is left in the same state (its sessions and its
date memory live here). Other filters (``maxlines`` > 1, check-all) go line by line.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from portsentinel.responder.filter.filters import MAX_LINE, Filter, Verdict, single_verdict
from portsentinel.responder.filter.multiline import (
    NOT_SCANNED,
    SCAN_REASONS,
    Fail,
    Rules,
    scan_texts,
    settle_single,
)
from portsentinel.responder.filter.worker import Worker, spare_cpu

#: Lines per chunk, and characters (a chunk ends at whichever comes first; a text is at most MAX_LINE long).
CHUNK_LINES = 1024
CHUNK_CHARS = 1 << 16
#: A run goes on in a worker process after this many lines (a small input is done before a fork pays off).
PARALLEL_AFTER = 10_000

#: (index, captures) of :func:`multiline.scan_single`, or (code, None) when it found none.
Scan = tuple[int, Fail | None]
Chunk = tuple[list[str | None], list[float | None]]  # the texts (None: line too long), their times
_TOO_LONG = f"line longer than {MAX_LINE} characters"


def batched(flt: Filter) -> bool:
    """Whether ``flt`` takes the staged path (else :func:`examine_lines` calls ``examine_line`` per line)."""
    match = flt.line_rules.match
    return bool(match.failregex) and match.maxlines == 1 and not flt.check_all


def examine_lines(flt: Filter, lines: Iterable[str], now: float, *, parallel: bool | None = None,
                  after: int | None = None) -> Iterator[Verdict]:
    """``flt.examine_line(line, now)`` for every line, in order, as one generator.

    ``parallel``: None decides by the machine (a worker process when a CPU is spare: :func:`worker.spare_cpu`,
    asked once the first ``after`` lines are done); True
    uses a worker whenever the input has more than ``after`` lines (default :data:`PARALLEL_AFTER`); False never
    does. Lines are read ahead by a few chunks."""
    if not batched(flt):
        for line in lines:
            yield flt.examine_line(line, now)
        return
    rules = flt.line_rules.match
    chunks = prepared(flt, lines, now)
    seen, after = 0, PARALLEL_AFTER if after is None else after
    while parallel is False or seen < after:
        chunk = next(chunks, None)
        if chunk is None:
            return
        texts, stamps = chunk
        yield from settle(flt, texts, stamps, scan(rules, texts), now)
        seen += len(texts)
    worker = Worker.start(lambda texts: scan(rules, texts)) if parallel or spare_cpu() else None
    if worker is None:  # on in this process
        for texts, stamps in chunks:
            yield from settle(flt, texts, stamps, scan(rules, texts), now)
        return
    for texts, stamps, scans in worker.run(chunks):
        yield from settle(flt, texts, stamps, scans, now)


def prepared(flt: Filter, lines: Iterable[str], now: float) -> Iterator[Chunk]:
    """Stage 1, in order: each line's text without its date, and its time, a chunk at a time
    (:meth:`Filter.split_date`; its usual case, a date that parses, written out here)."""
    state = flt.line_state
    dates = flt.line_rules.dates
    find = dates.find if dates is not None else None
    split_found = flt.split_found
    texts: list[str | None] = []
    stamps: list[float | None] = []
    chars = 0
    for raw in lines:
        line = raw.rstrip("\r\n")
        if len(line) > MAX_LINE:
            texts.append(None)
            stamps.append(None)
        else:
            found = find(line, now) if find is not None else (0, 0, None)
            if found is not None and found[2] is not None:
                start, end, stamp = found
                state.last_date, state.last_date_text = stamp, line[start:end]
                text = line[:start] + line[end:]
            else:
                (before, _date, after), stamp = split_found(line, found, now)
                text = before + after
            texts.append(text)
            stamps.append(stamp)
            chars += len(text)
        if len(texts) >= CHUNK_LINES or chars >= CHUNK_CHARS:
            yield texts, stamps
            texts, stamps, chars = [], [], 0
    if texts:
        yield texts, stamps


def scan(rules: Rules, texts: list[str | None]) -> list[Scan]:
    """Stage 2, no state: each text's regex result (:func:`multiline.scan_texts`)."""
    return scan_texts(rules, texts)


def settle(flt: Filter, texts: list[str | None], stamps: list[float | None], scans: list[Scan],
           now: float) -> list[Verdict]:
    """Stage 3, in order: sessions, host and verdict, as ``examine_line`` makes them."""
    state = flt.line_state
    out: list[Verdict] = []
    append = out.append
    for text, stamp, (index, fail) in zip(texts, stamps, scans, strict=True):
        if fail is not None:
            assert text is not None
            append(single_verdict(*settle_single(state, index, fail, text, now), text, stamp))
        elif index == NOT_SCANNED:
            append(Verdict("missed", _TOO_LONG))
        else:
            append(_missed(SCAN_REASONS[-1 - index], stamp))
    return out


def _missed(reason: str, stamp: float | None) -> Verdict:
    if reason == "ignoreregex matched":
        return Verdict("ignored", reason, time=stamp)
    return Verdict("missed", reason, time=stamp)

