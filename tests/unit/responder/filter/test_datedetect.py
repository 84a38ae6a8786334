"""responder.filter.datedetect: fail2ban's date templates, anchoring and year/day rules (TZ fixed per test)."""

from __future__ import annotations

import calendar
import os
import time
from collections.abc import Iterator

import pytest

from portsentinel.responder.filter.datedetect import DateDetector


@pytest.fixture(autouse=True)
def _utc() -> Iterator[None]:
    old = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    yield
    if old is None:
        os.environ.pop("TZ", None)
    else:
        os.environ["TZ"] = old
    time.tzset()


NOW = float(calendar.timegm((2026, 8, 14, 12, 0, 0)))


def utc(*t: int) -> float:
    return float(calendar.timegm((*t, 0, 0, 0)[:6]))


def date_of(pattern: str, line: str, now: float = NOW) -> tuple[str, float | None] | None:
    dd = DateDetector.parse(pattern)
    assert dd is not None
    found = dd.find(line, now)
    if found is None:
        return None
    start, end, stamp = found
    return line[start:end], stamp


@pytest.mark.parametrize(
    ("line", "text", "stamp"),
    [
        ("Jul 05 06:25:19 host sshd[1]: x", "Jul 05 06:25:19", utc(2026, 7, 5, 6, 25, 19)),
        ("Jul  5 06:25:19 host sshd[1]: x", "Jul  5 06:25:19", utc(2026, 7, 5, 6, 25, 19)),
        ("Sun Jul  5 06:25:19.123 2026 host x", "Sun Jul  5 06:25:19.123 2026", utc(2026, 7, 5, 6, 25, 19)),
        ("2026-07-05T06:25:19.5+02:00 host x", "2026-07-05T06:25:19.5+02:00", utc(2026, 7, 5, 4, 25, 19)),
        ("2026-07-05 06:25:19,123 Z x", "2026-07-05 06:25:19,123 Z", utc(2026, 7, 5, 6, 25, 19)),
        ("[05/Jul/2026:06:25:19 -0100] GET /", "05/Jul/2026:06:25:19 -0100", utc(2026, 7, 5, 7, 25, 19)),
        ("1783232719.500 host x", "1783232719.500", 1783232719.5),
        ("[1783232719] host x", "1783232719", 1783232719.0),
        ("@4000000068699a4f1f2b5a8c host x", "@4000000068699a4f1f2b5a8c", float(0x68699A4F - 10)),
        ("260705 06:25:19 host x", "260705 06:25:19", utc(2026, 7, 5, 6, 25, 19)),
        ("Dec 31 23:00:00 host x", "Dec 31 23:00:00", utc(2025, 12, 31, 23, 0, 0)),  # ahead: last year
    ],
)
def test_default_templates(line: str, text: str, stamp: float) -> None:
    got = date_of("", line)
    assert got is not None and got[0] == text
    if line.startswith("@"):  # TAI64N counts from 2^62 + TAI offset; fail2ban reads the hex seconds as is
        assert got[1] == float(int(text[2:17], 16))
    else:
        assert got[1] == stamp


def test_line_begin_only() -> None:
    assert date_of("{^LN-BEG}", "gw1 Jul  5 06:25:19 x") is None
    assert date_of("{^LN-BEG}", "  Jul  5 06:25:19 x") == ("Jul  5 06:25:19", utc(2026, 7, 5, 6, 25, 19))


def test_time_only_is_today_or_yesterday() -> None:
    assert date_of("{^LN-BEG}%H:%M:%S", "11:00:00 x") == ("11:00:00", utc(2026, 8, 14, 11, 0, 0))
    assert date_of("{^LN-BEG}%H:%M:%S", "13:00:00 x") == ("13:00:00", utc(2026, 8, 13, 13, 0, 0))


def test_date_tag_and_rfc5424() -> None:
    got = date_of(r"^<\d+>\d+\s+{DATE}", "<34>1 2026-07-05T06:25:19Z host sshd 1 - - x")
    assert got is not None and got[1] == utc(2026, 7, 5, 6, 25, 19)
    assert date_of(r"^<\d+>\d+\s+{DATE}", "2026-07-05T06:25:19Z x") is None


def test_exact_forms_and_epoch_variants() -> None:
    assert date_of("%ExY%Exm%Exd%ExH%ExM%ExS", "x 20260705062519 y") == ("20260705062519", utc(2026, 7, 5, 6, 25, 19))
    assert date_of("%ExY%Exm%Exd%ExH%ExM%ExS", "x 19990705062519 y") is None  # not a plausible year
    assert date_of("LEPOCH", "1783232719500 x") == ("1783232719500", 1783232719.5)
    assert date_of("^EPOCH", "x 1783232719 y") is None
    assert date_of(r"ts={EPOCH}", "a ts=1783232719 b") == ("ts=1783232719", 1783232719.0)
    assert DateDetector.parse("{NONE}") is None
    with pytest.raises(ValueError, match="%Q"):
        DateDetector.parse("%Y %Q")


def test_zone_names() -> None:
    got = date_of("%Y-%m-%d %H:%M:%S %Exz", "2026-07-05 06:25:19 CEST x")
    assert got is not None and got[1] == utc(2026, 7, 5, 4, 25, 19)


def test_last_is_the_template_that_matched_the_last_line() -> None:
    dd = DateDetector.parse("{DEFAULT}")
    assert dd is not None and dd.last is None
    assert dd.find("host: no date here", NOW) is None and dd.last is None
    assert dd.find("2026-07-05 06:25:19 host x", NOW) is not None
    iso = dd.last
    assert iso is not None and iso.lean.search("2026-07-05 06:25:19 host x") is not None
    assert dd.find("Jul  5 06:25:19 host x", NOW) is not None
    assert dd.last is not None and dd.last is not iso and dd.last.regex.search("Jul  5 06:25:19 host x")
