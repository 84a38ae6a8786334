"""fail2ban's own sample suite, run through our filters the way fail2ban's tests/samplestestcase.py runs it.

Data: the Debian fail2ban package unpacked by ``scripts/setup.sh --test`` (tests/.cache/fail2ban): the stock
``etc/fail2ban/filter.d`` filters, the two ``zzz-*`` test filters of its ``tests/config/filter.d``, and the
sample logs ``tests/files/logs/<filter>``. Rules (as in samplestestcase.py):

- ``# failJSON: {...}`` describes the next line: ``match``, and where given ``host``, ``time`` (local time,
  zone CET/CEST, the clock at 2005-08-14 12:00 CEST), ``user``, ``users``, ``attempts`` and other captures;
- ``# filterOptions: {...}`` or a list of them: the following lines run through the filter once per option
  set (``test.*`` keys are not filter options; ``test.condition`` skips a block; ``test.prefix-line`` is
  put before each line for ``logtype = journal``, whose entries carry their time, TEST_NOW);
- ``# fileOptions`` merge into every option set, ``# addFILE: "name"`` reads another sample file after;
- ``constraint`` in a failJSON skips the line for option sets where it is false;
- a filter's state (multi-line sessions, date-template hits) lasts for the whole file, per option set;
- every failregex is tried (fail2ban's test mode), and a matching line must have exactly one failure.

Where we differ on purpose (docs/filters.md): a host name is never resolved, so a line fail2ban matches
with a host name is for us a miss whose reason names that host; the suite checks exactly that.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from portsentinel.responder.filter.filters import Filter, FilterError, Verdict, load_filter

ROOT = Path(__file__).resolve().parents[2]
F2B = ROOT / "tests" / ".cache" / "fail2ban"
PKG = F2B / "usr/lib/python3/dist-packages/fail2ban"
STOCK_DIR = F2B / "etc/fail2ban/filter.d"
TEST_DIR = PKG / "tests/config/filter.d"
LOGS = PKG / "tests/files/logs"
TEST_NOW = 1124013600.0  # Sun Aug 14 12:00:00 CEST 2005, fail2ban's test clock
TEST_TZ = "CET-01CEST-02,M3.5.0,M10.5.0"

#: Filters knowingly different from fail2ban, with the reason (docs/filters.md, "Differences").
KNOWN_DIFFERENT: dict[str, str] = {}

#: Host names fail2ban reported where we (deliberately) did not match, for the summary.
NAME_HOSTS: list[str] = []
_HEADER = re.compile(r"^#+ ?(failJSON|(?:file|filter)Options|addFILE):(.+)$")


@contextmanager
def fail2ban_clock() -> Iterator[None]:
    """The time zone fail2ban's tests use (restored afterwards)."""
    old = os.environ.get("TZ")
    os.environ["TZ"] = TEST_TZ
    time.tzset()
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = old
        time.tzset()


def suite_filters() -> list[tuple[str, Path]]:
    """(name, filter.d) of every filter fail2ban's suite tests: stock ones (not ``*common.conf``), zzz-*."""
    out = [(p.stem, STOCK_DIR) for p in sorted(STOCK_DIR.glob("*.conf")) if not p.name.endswith("common.conf")]
    out += [(p.stem, TEST_DIR) for p in sorted(TEST_DIR.glob("zzz-*.conf"))]
    return out


@dataclass
class Outcome:
    name: str
    lines: int = 0  # compared (line, option set) pairs
    agree: int = 0
    problems: list[str] = field(default_factory=list)
    refused: str = ""


def _expected_time(text: str) -> float:
    fmt = "%Y-%m-%dT%H:%M:%S.%f" if "." in text else "%Y-%m-%dT%H:%M:%S"
    t = dt.datetime.strptime(text, fmt)
    return time.mktime(t.timetuple()) + t.microsecond / 1e6


def _check(v: Verdict, expect: dict[str, Any]) -> str:
    """Empty when our verdict agrees with the failJSON; else what differs."""
    want = bool(expect.get("match", False))
    if not want:
        return "" if v.kind != "matched" else f"matched {v.host} (regex {v.regex + 1}), fail2ban does not"
    host = expect.get("host")
    if v.also:
        return f"more than one failregex found a failure: {v.regex + 1} and {[i + 1 for i in v.also]}"
    if v.kind != "matched":
        if host and "not an IP address" in v.reason and v.host == host:
            NAME_HOSTS.append(host)
            return ""  # a host name: a deliberate miss (names are never resolved)
        return f"{v.kind} ({v.reason}), fail2ban matches {host}"
    for key, value in expect.items():
        if key in ("time", "match", "desc", "constraint"):
            continue
        ours: Any = v.fields.get(key)
        if ours is None and key == "host":
            f = v.fields
            ours = f.get("fid") or f.get("ip4") or f.get("ip6") or f.get("dns") or v.host
        if key == "attempts" and ours is None:
            ours = len(v.fields.get("matches", []))
        if isinstance(ours, set | list | tuple) or isinstance(value, list):
            if sorted(map(str, ours or [])) != sorted(map(str, value)):
                return f"{key}: {ours!r} != {value!r}"
            continue
        if ours != value:
            return f"{key}: {ours!r} != {value!r}"
    if expect.get("time") is not None and v.time != _expected_time(expect["time"]):
        return f"time {v.time} != {expect['time']} ({_expected_time(expect['time'])})"
    return ""


def run_filter(name: str, basedir: Path) -> Outcome:
    """Run one filter's sample file(s); call inside :func:`fail2ban_clock`."""
    out = Outcome(name)
    cache: dict[str, Filter] = {}
    tests: list[tuple[Filter, dict[str, Any]]] = []
    files = [name]
    common: dict[str, Any] = {}

    def get(opts: dict[str, Any]) -> Filter:
        fopts = {k: str(v) for k, v in opts.items() if not k.startswith("test.")}
        key = opts.get("test.filter-name") or (str(fopts) if fopts else "")
        if key not in cache:
            flt = load_filter(basedir, name, fopts)
            flt.check_all = True
            cache[key] = flt
        return cache[key]

    i = 0
    while i < len(files):
        path = LOGS / files[i]
        i += 1
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        expect: dict[str, Any] | None = None
        skip_block = False
        for lineno, line in enumerate(lines, start=1):
            hm = _HEADER.match(line)
            if hm:
                kind, data = hm.group(1), json.loads(hm.group(2))
                if kind == "fileOptions":
                    common = data
                elif kind == "filterOptions":
                    tests, skip_block = [], False
                    for one in data if isinstance(data, list) else [data]:
                        opts = {**common, **one}
                        if opts.get("test.condition"):
                            skip_block = not eval(opts["test.condition"], {"name": name})  # noqa: S307
                        if not skip_block:
                            tests.append((get(opts), opts))
                elif kind == "addFILE":
                    files.append(data)
                else:
                    expect = data
                continue
            if expect is None:
                if skip_block or line.startswith("#") or not line.strip():
                    continue
                expect = {}
            if skip_block:
                expect = None
                continue
            if not tests:
                tests = [(get({}), {})]
            for flt, opts in tests:
                cond = expect.get("constraint")
                if cond and not eval(cond, {"name": name, "opts": opts}):  # noqa: S307
                    continue
                text = line.rstrip("\r\n")
                if opts.get("logtype") == "journal":
                    v = flt.examine_entry(opts.get("test.prefix-line", "") + text, TEST_NOW, TEST_NOW)
                else:
                    v = flt.examine_line(text, TEST_NOW)
                out.lines += 1
                why = _check(v, expect)
                if why:
                    out.problems.append(f"{files[i - 1]}:{lineno} {opts or ''}: {why}: {text[:160]}")
                else:
                    out.agree += 1
            expect = None
    return out


def test_filter_dir(tmp: Path) -> Path:
    """fail2ban's zzz-* test filters include ``../../../../../../../config/filter.d/common.conf`` (the source
    tree's stock file): lay them out in ``tmp`` so that path reaches the stock common.conf."""
    base = tmp / "a/b/c/d/e/f/filter.d"
    base.mkdir(parents=True)
    (tmp / "config/filter.d").mkdir(parents=True)
    shutil.copy(STOCK_DIR / "common.conf", tmp / "config/filter.d/common.conf")
    for p in TEST_DIR.glob("zzz-*.conf"):
        shutil.copy(p, base / p.name)
    return base


def run_all() -> list[Outcome]:
    results: list[Outcome] = []
    with fail2ban_clock(), tempfile.TemporaryDirectory() as tmp:
        test_dir = test_filter_dir(Path(tmp))
        for name, basedir in suite_filters():
            basedir = test_dir if basedir == TEST_DIR else basedir
            if not (LOGS / name).is_file():
                results.append(Outcome(name, refused="no sample file"))
                continue
            try:
                results.append(run_filter(name, basedir))
            except (FilterError, ValueError, OSError) as exc:
                results.append(Outcome(name, refused=str(exc)))
    return results


if __name__ == "__main__":  # a summary: python -m tests.samples.f2b_suite [-v]
    import sys

    res = run_all()
    for o in res:
        state = f"REFUSED {o.refused}" if o.refused else f"{o.agree}/{o.lines}"
        print(f"{o.name:32} {state}")
        if "-v" in sys.argv:
            for p in o.problems:
                print("    " + p)
    total = sum(o.lines for o in res)
    agree = sum(o.agree for o in res)
    full = sum(1 for o in res if not o.refused and o.lines and o.agree == o.lines)
    refused = sum(1 for o in res if o.refused)
    print(f"host names (deliberate misses): {len(NAME_HOSTS)}: {sorted(set(NAME_HOSTS))}")
    print(f"lines {agree}/{total} ({100 * agree / max(total, 1):.1f} %), filters fully agreeing {full}/"
          f"{len(res)}, refused {refused}")
