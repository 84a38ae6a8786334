"""The logic of ``portsentinel test-filter``: run a filter over lines or records and summarise, like
fail2ban-regex. The CLI reads the log file or the journal and passes an iterable here.

The text summary and the JSON document are a stable contract (docs/filters.md, "test-filter output").
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from portsentinel.responder.filter.batch import examine_lines
from portsentinel.responder.filter.filters import Filter, Verdict

#: Bumped only when the JSON document changes incompatibly.
JSON_VERSION = 1
#: How many entries the result keeps (counts are always complete); ``None`` keeps every entry.
DEFAULT_KEEP = 1000


@dataclass(frozen=True)
class Entry:
    """One examined entry: 1-based number in the input, verdict kind (matched, ignored, missed), host,
    reason, text, failregex index (-1: none), the entry's parsed time (None: none) and ``<F-USER>``."""

    number: int
    kind: str
    host: str
    reason: str
    text: str
    regex: int
    time: float | None = None
    user: str = ""


@dataclass
class FilterRun:
    filter: str
    source: str
    lines: int = 0
    matched: int = 0
    ignored: int = 0
    missed: int = 0
    skipped: int = 0  # blank and '#' comment lines (plain logs only), not counted in ``lines``
    hosts: dict[str, int] = field(default_factory=dict)  # address -> failures, in first-seen order
    regex_hits: dict[int, int] = field(default_factory=dict)  # failregex index -> matches
    entries: list[Entry] = field(default_factory=list)
    truncated: bool = False

    def add(self, number: int, verdict: Verdict, text: str, keep: int | None) -> None:
        self.lines += 1
        if verdict.kind == "matched":
            self.matched += 1
            assert verdict.failure is not None
            self.hosts[verdict.failure.host] = self.hosts.get(verdict.failure.host, 0) + 1
        elif verdict.kind == "ignored":
            self.ignored += 1
        else:
            self.missed += 1
        if verdict.kind == "matched" and verdict.regex >= 0:
            self.regex_hits[verdict.regex] = self.regex_hits.get(verdict.regex, 0) + 1
        if keep is None or len(self.entries) < keep:
            self.entries.append(Entry(number, verdict.kind, verdict.host, verdict.reason, text, verdict.regex,
                                      verdict.time, verdict.user))
        else:
            self.truncated = True


def run_lines(flt: Filter, lines: Iterable[str], *, now: float, source: str = "-",
              keep: int | None = DEFAULT_KEEP, parallel: bool | None = None) -> FilterRun:
    """Plain log lines (blank lines and lines starting with ``#`` are skipped, as fail2ban-regex does), through
    :func:`batch.examine_lines` (``parallel``: see there; a big log uses a second CPU when there is one)."""
    result = FilterRun(flt.name, source)
    taken: deque[tuple[int, str]] = deque()  # the lines handed on and not yet judged, with their numbers

    def wanted() -> Iterator[str]:
        for number, raw in enumerate(lines, start=1):
            line = raw.rstrip("\r\n")
            if not line.strip() or line.startswith("#"):
                result.skipped += 1
                continue
            taken.append((number, line))
            yield line

    for verdict in examine_lines(flt, wanted(), now, parallel=parallel):
        number, line = taken.popleft()
        result.add(number, verdict, line, keep)
    return result


def run_records(flt: Filter, records: Iterable[Mapping[str, str]], *, source: str = "journal",
                 keep: int | None = DEFAULT_KEEP) -> FilterRun:
    """Journal entries or JSON-lines records (field name → text)."""
    result = FilterRun(flt.name, source)
    for number, rec in enumerate(records, start=1):
        result.add(number, flt.examine_record(rec), rec.get("MESSAGE", ""), keep)
    return result


def format_summary(result: FilterRun, *, show: Iterable[str] = ("missed",)) -> str:
    """The stable text summary (docs/filters.md). ``show`` lists the kinds whose entries are printed."""
    out = [
        f"Filter: {result.filter}",
        f"Source: {result.source}",
        f"Lines: {result.lines} lines, {result.matched} matched, {result.ignored} ignored, "
        f"{result.missed} missed",
        f"Hosts: {len(result.hosts)} distinct",
    ]
    for host, count in sorted(result.hosts.items(), key=lambda hc: (-hc[1], hc[0])):
        out.append(f"  {host} {count}")
    out.append("Failregex hits:")
    for index, count in sorted(result.regex_hits.items()):
        out.append(f"  #{index + 1} {count}")
    for kind in show:
        chosen = [e for e in result.entries if e.kind == kind]
        out.append(f"{kind.capitalize()} entries: {len(chosen)}{' (truncated)' if result.truncated else ''}")
        for e in chosen:
            why = f" ({e.reason})" if e.reason else ""
            out.append(f"  {e.number}: {_one_line(e.text)}{why}")
    return "\n".join(out) + "\n"


def _one_line(text: str, limit: int = 200) -> str:
    flat = text.replace("\n", "\\n").replace("\r", "\\r")
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def to_json(result: FilterRun) -> str:
    """One JSON document, keys sorted (docs/filters.md)."""
    doc = {
        "version": JSON_VERSION,
        "filter": result.filter,
        "source": result.source,
        "lines": result.lines,
        "matched": result.matched,
        "ignored": result.ignored,
        "missed": result.missed,
        "skipped": result.skipped,
        "hosts": dict(sorted(result.hosts.items())),
        "failregex_hits": {str(i + 1): n for i, n in sorted(result.regex_hits.items())},
        "truncated": result.truncated,
        "entries": [
            {"n": e.number, "kind": e.kind, "host": e.host, "reason": e.reason, "regex": e.regex + 1,
             "text": e.text, "time": e.time, "user": e.user}
            for e in result.entries
        ],
    }
    return json.dumps(doc, sort_keys=True, ensure_ascii=True)
