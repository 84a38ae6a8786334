"""Sample-driven filter tests, as fail2ban does: one test per shipped filter, from tests/samples/filters/NAME.

Format: each sample (a plain log line, or a record as one JSON object) sits under a header
``# failJSON: {"match": true, "host": "1.2.3.4", "time": "2026-03-03T06:25:19", "user": "x"}``
(``time``: local ISO time, or epoch seconds; ``time`` and ``user`` optional). ``# filterOptions: {...}``
sets the filter arguments for the samples after it. Other ``#`` lines and blank lines are comments.
A shipped filter without samples fails.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from portsentinel.responder.config.inifile import read_layered
from portsentinel.responder.filter.filters import Filter, Verdict, load_filter
from tests.conftest import ROOT

FILTER_DIR = ROOT / "filter.d"
SAMPLES = ROOT / "tests" / "samples" / "filters"
#: The clock for year-less dates: late in 2026, so "Mar  3" is 2026-03-03.
NOW = time.mktime((2026, 12, 31, 12, 0, 0, 0, 0, -1))


@dataclass
class Sample:
    lineno: int
    expect: dict[str, Any]
    args: dict[str, str]
    text: str


def shipped_filters() -> list[str]:
    """Filters a jail can name: filter.d/*.conf with a [Definition] (include-only files have none)."""
    return [p.stem for p in sorted(FILTER_DIR.glob("*.conf")) if read_layered(p).has_section("Definition")]


def read_samples(path: Path) -> list[Sample]:
    out: list[Sample] = []
    args: dict[str, str] = {}
    expect: dict[str, Any] | None = None
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.startswith("# failJSON:"):
            assert expect is None, f"{path}:{lineno}: two headers in a row"
            expect = json.loads(line.split(":", 1)[1])
        elif line.startswith("# filterOptions:"):
            args = json.loads(line.split(":", 1)[1])
        elif line.startswith("#") or not line.strip():
            continue
        else:
            assert expect is not None, f"{path}:{lineno}: sample without a # failJSON: header"
            out.append(Sample(lineno, expect, dict(args), line))
            expect = None
    return out


def examine(flt: Filter, text: str) -> Verdict:
    if text.startswith("{"):
        record = json.loads(text)
        return flt.examine_record({k: str(v) for k, v in record.items()})
    return flt.examine_line(text, NOW)


def expected_time(value: Any) -> float:
    if isinstance(value, int | float):
        return float(value)
    return time.mktime(dt.datetime.fromisoformat(value).timetuple())


@pytest.mark.parametrize("name", shipped_filters())
def test_shipped_filter_samples(name: str) -> None:
    path = SAMPLES / name
    assert path.is_file(), f"shipped filter {name} has no samples: write {path.relative_to(ROOT)}"
    samples = read_samples(path)
    assert samples, f"{path} holds no samples"
    assert any(s.expect["match"] for s in samples), f"{path}: no sample that matches"
    cache: dict[str, Filter] = {}
    problems: list[str] = []
    for s in samples:
        key = json.dumps(s.args, sort_keys=True)
        flt = cache.get(key) or cache.setdefault(key, load_filter(FILTER_DIR, name, s.args))
        v = examine(flt, s.text)
        where = f"{path.name}:{s.lineno}"
        if not s.expect["match"]:
            if v.failure is not None:
                problems.append(f"{where}: unexpected failure for {v.failure.host}")
            continue
        if v.failure is None:
            problems.append(f"{where}: expected {s.expect.get('host')}, got {v.kind} ({v.reason})")
            continue
        if "host" in s.expect and v.failure.host != s.expect["host"]:
            problems.append(f"{where}: host {v.failure.host} != {s.expect['host']}")
        if "time" in s.expect and v.failure.time != pytest.approx(expected_time(s.expect["time"])):
            problems.append(f"{where}: time {v.failure.time} != {s.expect['time']}")
        if "user" in s.expect and v.failure.fields.get("user") != s.expect["user"]:
            problems.append(f"{where}: user {v.failure.fields.get('user')!r} != {s.expect['user']!r}")
    assert not problems, "\n".join(problems)


def test_every_sample_file_has_a_filter() -> None:
    names = set(shipped_filters())
    orphans = [p.name for p in SAMPLES.iterdir() if p.is_file() and p.name not in names]
    assert not orphans, f"samples for filters that do not exist: {orphans}"
