"""The filters' fast paths give what the general code gives, on fail2ban's own sample logs:

- the one-line matcher (multiline.find_single) against find_failures, line by line, sessions included;
- regexes.Groups.read (from ``m.groups()``) against match_groups (from ``m.groupdict()``);
- a date template's lean twin (date_templates.lean_regex) finds the same date at the same place.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from portsentinel.responder.filter.date_templates import (
    CASE_EXTRA,
    DEFAULT_PATTERNS,
    default_templates,
    lean_regex,
    pattern_template,
)
from portsentinel.responder.filter.filters import load_filter
from portsentinel.responder.filter.multiline import MatchState, find_failures, find_single
from portsentinel.responder.filter.regexes import Groups, compile_regex, match_groups
from tests.conftest import stock_file

NOW = 1_764_000_000.0
FILTERS = ["sshd", "postfix", "dovecot", "apache-auth", "nginx-http-auth", "pam-generic", "courier-smtp",
           "sendmail-reject", "vsftpd", "proftpd", "asterisk", "named-refused"]


def sample_lines(name: str) -> list[str]:
    log = stock_file("fail2ban", f"usr/lib/python3/dist-packages/fail2ban/tests/files/logs/{name}")
    text = log.read_text(encoding="utf-8", errors="replace")
    return [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]


def filter_dir() -> Path:
    return stock_file("fail2ban", "etc/fail2ban/filter.d/sshd.conf").parent


@pytest.mark.parametrize("name", FILTERS)
def test_one_line_matcher_is_find_failures(name: str) -> None:
    flt = load_filter(filter_dir(), name, {})
    rules = flt.line_rules.match
    assert rules.maxlines == 1
    general, single = MatchState(), MatchState()
    compared = matched = 0
    for line in sample_lines(name):
        tup, stamp = flt.split_date(line, NOW)
        hits, reason = find_failures(rules, general, tup, stamp, now=NOW)
        index, host, fail, why = find_single(rules, single, tup[0] + tup[2], now=NOW)
        if hits:
            hit = hits[0]
            assert (index, fail, why) == (hit.regex, hit.fail, ""), line
            assert host == (None if hit.fail.get("nofail") else hit.fid), line
            matched += host is not None
        else:
            assert (index, host, fail, why) == (-1, None, None, reason), line
        compared += 1
    assert set(general.sessions) == set(single.sessions)
    assert compared > 0 and matched > 0


@pytest.mark.parametrize("name", FILTERS)
def test_groups_read_is_match_groups(name: str) -> None:
    flt = load_filter(filter_dir(), name, {})
    rules = flt.line_rules.match
    seen = 0
    for line in sample_lines(name):
        tup, _stamp = flt.split_date(line, NOW)
        texts = [(rules.prefregex, tup[0] + tup[2] + "\n")] if rules.prefregex is not None else []
        content = tup[0] + tup[2] + "\n"
        if texts:
            pm = texts[0][0].search(texts[0][1]) if texts[0][0] is not None else None
            content = pm.group("content") + "\n" if pm is not None else ""
        texts += [(p, content) for p in (*rules.failregex, *rules.ignoreregex)]
        for pat, text in texts:
            assert pat is not None
            m = pat.search(text)
            if m is not None:
                assert Groups.of(pat).read(m) == match_groups(m), (pat.pattern, line)
                seen += 1
    assert seen > 0


def test_groups_read_folds_alt_and_tuple_groups() -> None:
    pat = compile_regex(r"^(?:u=<F-USER>\w*</F-USER>)? ?(?:r=<F-ALT_USER>\w+</F-ALT_USER>)? "
                        r"t=<F-TUPLE_USER>\w+</F-TUPLE_USER> (x)? from <HOST>$")
    for text in ("u=alice r=bob t=carol  from 192.0.2.1", " r=bob t=carol  from 192.0.2.1",
                 "u= t=carol x from 192.0.2.1"):
        m = pat.search(text)
        assert m is not None
        assert Groups.of(pat).read(m) == match_groups(m)
    m = pat.search(" r=bob t=carol  from 192.0.2.1")
    assert m is not None and Groups.of(pat).read(m)["user"] == ("bob", "carol")


def test_lean_date_regex_finds_the_same_date() -> None:
    templates = default_templates() + [pattern_template("{^LN-BEG}" + p) for p in DEFAULT_PATTERNS[:2]]
    assert sum(t.lean is not t.regex for t in templates) >= 20  # most templates have a lean twin
    lines = [ln for name in FILTERS + ["3proxy", "monit", "squid", "traefik-auth", "domino-smtp"]
             for ln in sample_lines(name)]
    found = 0
    for tpl in templates:
        for line in lines:
            full, lean = tpl.regex.search(line), tpl.lean.search(line)
            assert (full is None) == (lean is None), (tpl.source, line)
            if full is not None and lean is not None:
                assert (full.start(), full.span(1)) == (lean.start(), lean.span(1)), (tpl.source, line)
                found += 1
    assert found > 1000


def test_lean_regex_keeps_what_it_cannot_prove() -> None:
    named_first = re.compile(r"(?P<a>x)(y)")
    assert lean_regex(named_first) is named_first
    numbered = re.compile(r"(a)(?P<b>b)\2")
    assert lean_regex(numbered) is numbered
    referred = re.compile(r"((?P<sep>[-/])(?P<m>\d\d)(?P=sep))")
    lean = lean_regex(referred)
    assert lean is not referred and set(lean.groupindex) == {"sep"} and lean.groups == 2
    m = lean.search("x-12-y")
    assert m is not None and m.span(1) == (1, 5)


def test_case_extra_is_what_ignorecase_matches() -> None:
    every = "".join(chr(c) for c in range(0x110000))
    for letter in "abcdefghijklmnopqrstuvwxyz":
        found = set(re.findall("(?i)" + letter, every))
        assert found == {letter, letter.upper(), *CASE_EXTRA.get(letter, "")}, letter


def test_lean_date_regex_reads_day_and_month_words_in_any_case() -> None:
    tpl = default_templates()[1]  # {^LN-BEG}(?:%a )?%b %d %k:%M:%S...
    assert "(?-i:" in tpl.lean.pattern
    for line in ("Sep 05 06:25:19 gw x", "SEP 05 06:25:19 gw x", "ſep 05 06:25:19 gw x", "sEp 5 06:25:19 gw x",
                 "Fri Sep 05 06:25:19 gw x", "FRİ Sep 05 06:25:19 gw x", "Spe 05 06:25:19 gw x"):
        full, lean = tpl.regex.search(line), tpl.lean.search(line)
        assert (full is None) == (lean is None), line
        if full is not None and lean is not None:
            assert full.span(1) == lean.span(1), line
