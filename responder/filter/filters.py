"""Filters: a journal record or a log line → a Failure (an address to count), fail2ban-compatible.

A filter is ``filter.d/NAME.conf`` read with :func:`responder.config.inifile.read_layered` (``.local``, ``.d/``,
``[INCLUDES]``), options from ``[Definition]``, ``[Init]`` and the jail's ``NAME[key=value]`` arguments
(which win). docs/filters.md is the reference; the short version:

- ``journalmatch``: ``FIELD=value`` terms AND-ed, ``+`` starts an alternative (as ``journalctl``); checked
  on records only. A field named twice in one group is an OR of the values, as in journalctl.
- ``hostfield``: (ours) the record field that holds the address, e.g. ``PS_SRC``; no regex needed.
- ``prefregex`` (with ``<F-CONTENT>…</F-CONTENT>``), ``failregex`` (one per line), ``ignoreregex``, written
  as fail2ban writes them (:mod:`responder.filter.regexes`).
- ``datepattern``: fail2ban's date detection (:mod:`responder.filter.datedetect`).
- ``maxlines``, ``<F-MLFID>``, ``<F-NOFAIL>``, ``<F-MLFGAINED>``, ``<F-MLFFORGET>``: state across lines
  (:mod:`responder.filter.multiline`), kept in the Filter object.

Pure: no I/O except reading the filter's files; clocks are passed in.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from portsentinel import record as R
from portsentinel.responder.config.inifile import KNOWN_PREFIX, Ini, IniError, Value, read_layered
from portsentinel.responder.filter.datedetect import DateDetector
from portsentinel.responder.filter.journalmatch import field_name, journal_line, parse_journalmatch
from portsentinel.responder.filter.multiline import Hit, MatchState, Rules, TupleLine, find_failures, find_single
from portsentinel.responder.filter.regexes import Dispatch, compile_regex, has_failure_id

DEFINITION = "Definition"
INIT = "Init"
#: Longest text a regex is run on; longer lines are a miss (bounds the cost of a hostile line).
MAX_LINE = 8192
#: Tag expansion: at most this many nested levels, and this many characters.
MAX_TAG_PASSES = 25
MAX_EXPANDED = 1 << 20
_CONF_TAG = re.compile(r"<([^ <>]+)>")
#: A line without a date of its own inherits the last date seen this recently (seconds), as in fail2ban.
LAST_DATE_AGE = 60.0


class FilterError(IniError):
    """A filter that cannot be used; names ``file:line: [section] key: reason`` like IniError."""


# -- results ---------------------------------------------------------------------------------------------
@dataclass(slots=True)
class Failure:
    """A matched record or line: ``host`` is a canonical address (portsentinel.record.canonical_address)."""

    host: str
    time: float | None
    fields: Mapping[str, Any]
    matched: str
    regex: int = -1  # index of the failregex that matched; -1 when the host came from ``hostfield``


Kind = Literal["matched", "ignored", "missed"]


@dataclass(slots=True)
class Verdict:
    """What a filter made of one entry: a failure, an ignored match, or a miss with its reason.

    ``host``: the text captured as host (also for misses); ``time``: the entry's parsed time; ``user``: the
    ``<F-USER>`` capture; ``regex``: index of the failregex (-1: none); ``fields``: every capture.
    """

    kind: Kind
    reason: str = ""
    failure: Failure | None = None
    host: str = ""
    regex: int = -1
    time: float | None = None
    user: str = ""
    fields: Mapping[str, Any] = field(default_factory=dict)
    also: tuple[int, ...] = ()  # other failregexes that found a failure too (only in check_all mode)


# -- compiled rules --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Rules:
    match: Rules
    dates: DateDetector | None  # None: {NONE}


@dataclass
class Filter:
    """A loaded filter with its multi-line state. :meth:`examine_record` / :meth:`examine_line` say why.

    ``check_all`` is fail2ban's test mode (every failregex is tried; used by the sample suite).
    """

    name: str
    path: str
    journalmatch: list[dict[str, str]]
    hostfield: str
    line_rules: _Rules
    record_rules: _Rules
    check_all: bool = False
    line_state: MatchState = field(default_factory=MatchState)
    record_state: MatchState = field(default_factory=MatchState)
    #: ``journalmatch`` as (names, values) per group, made at the first record (see _journal_matches).
    _groups: list[tuple[tuple[str, ...], frozenset[tuple[str | None, ...]]]] | None = field(
        default=None, compare=False, repr=False)

    # --- records (journal or JSON lines) ---
    def match_record(self, record: Mapping[str, str], now: float | None = None) -> Failure | None:
        """:meth:`examine_record`'s failure. A record with the ``hostfield`` under a filter without ignoreregex
        (portsentinel, portsentinel-fleet) is decided from its fields alone: no journal text, no Verdict."""
        if not self._by_fields(record):
            return self.examine_record(record, now).failure
        ip = self.record_host(record)
        return None if ip is None else Failure(ip, R.record_time(record, journal_first=True), record,
                                                record.get(R.F_MESSAGE, ""), -1)

    def record_host(self, record: Mapping[str, str]) -> str | None:
        """The canonical address of :meth:`match_record`'s failure, or None when it has none (what the engine
        needs of a record: for the filters decided from their fields alone, without making the Failure)."""
        if not self._by_fields(record):
            failure = self.examine_record(record, None).failure
            return None if failure is None else failure.host
        if not self._journal_matches(record):
            return None
        try:
            return _canonical(record[self.hostfield])
        except ValueError:
            return None

    def _by_fields(self, record: Mapping[str, str]) -> bool:
        return bool(self.hostfield) and self.hostfield in record and not self.record_rules.match.ignoreregex

    def _journal_matches(self, record: Mapping[str, str]) -> bool:
        """The record satisfies ``journalmatch`` (one of its groups, every term of it); True without one."""
        groups = self._groups
        if groups is None:  # the groups by their field names: (names, the value tuples that match)
            by_names: dict[tuple[str, ...], set[tuple[str, ...]]] = {}
            for g in self.journalmatch:
                by_names.setdefault(tuple(g), set()).add(tuple(g.values()))
            groups = self._groups = [(names, frozenset(values)) for names, values in by_names.items()]
        if not groups:
            return True
        get = record.get
        for names, values in groups:
            if tuple(map(get, names)) in values:
                return True
        return False

    def examine_record(self, record: Mapping[str, str], now: float | None = None) -> Verdict:
        if not self._journal_matches(record):
            return Verdict("missed", "journalmatch not satisfied")
        stamp = R.record_time(record, journal_first=True)
        if self.hostfield and self.hostfield in record:
            ignore = self.record_rules.match.ignoreregex
            if ignore:  # (the journal text only for it)
                text = journal_line(record)[:MAX_LINE] + "\n"
                if any(p.search(text) for p in ignore):
                    return Verdict("ignored", "ignoreregex matched", time=stamp)
            return verdict_of(record[self.hostfield], stamp, dict(record), record.get(R.F_MESSAGE, ""), -1)
        return self.examine_entry(journal_line(record), stamp, now)

    def examine_entry(self, text: str, stamp: float | None, now: float | None = None) -> Verdict:
        """A journal entry already formatted as one line, whose time is known (no date detection)."""
        if len(text) > MAX_LINE:
            return Verdict("missed", f"text longer than {MAX_LINE} characters", time=stamp)
        clock = time.time() if now is None else now
        return self._examine(self.record_rules, self.record_state, ("", "", text), stamp, clock)

    # --- plain log lines ---
    def match_line(self, line: str, now: float | None = None) -> Failure | None:
        return self.examine_line(line, now).failure

    def examine_line(self, line: str, now: float | None = None) -> Verdict:
        line = line.rstrip("\r\n")
        if len(line) > MAX_LINE:
            return Verdict("missed", f"line longer than {MAX_LINE} characters")
        clock = time.time() if now is None else now
        tup, stamp = self.split_date(line, clock)
        return self._examine(self.line_rules, self.line_state, tup, stamp, clock)

    def split_date(self, line: str, now: float) -> tuple[TupleLine, float | None]:
        """fail2ban's processLine: cut the date out; a line without one may inherit the last date.
        Lines come here in their order (no line end): the filter remembers the last date."""
        dates = self.line_rules.dates
        return self.split_found(line, dates.find(line, now) if dates is not None else (0, 0, None), now)

    def split_found(self, line: str, found: tuple[int, int, float | None] | None, now: float
                    ) -> tuple[TupleLine, float | None]:
        """:meth:`split_date` with what ``DateDetector.find`` found in the line (it may be asked once only)."""
        st = self.line_state
        if found is None:
            tup: TupleLine = ("", "", line)
        else:
            start, end, stamp = found
            if stamp is not None:
                date = line[start:end]
                st.last_date, st.last_date_text = stamp, date
                return (line[:start], date, line[end:]), stamp
            tup = (line[:start], line[start:end], line[end:])
            if start == end and not (st.last_date is not None and st.last_date > now - LAST_DATE_AGE):
                return tup, now  # an empty date (e.g. {NONE}): the time it is read
        if st.last_date is not None and st.last_date > now - LAST_DATE_AGE:
            return ("", st.last_date_text, line), st.last_date
        return tup, None

    def _examine(self, rules: _Rules, state: MatchState, tup: TupleLine, stamp: float | None,
                 now: float) -> Verdict:
        match = rules.match
        if not match.failregex:
            return Verdict("missed", "filter has no failregex", time=stamp)
        if match.maxlines == 1 and not self.check_all:
            text = tup[0] + tup[2]
            index, host, fail, reason = find_single(match, state, text, now=now)
            return single_verdict(index, host, fail, reason, text, stamp)
        hits, reason = find_failures(match, state, tup, stamp, now=now, check_all=self.check_all)
        real = [h for h in hits if h.fid is not None and not h.fail.get("nofail")]
        if not real:
            return no_failure(reason, stamp, hits[0] if hits else None)
        hit = real[0]
        text = tup[0] + tup[2] if match.maxlines == 1 else "\n".join(hit.fail.get("matches", [])[-1:])
        v = verdict_of(_host_of(hit), stamp, hit.fail, text, hit.regex)
        if len(real) > 1:
            v.also = tuple(h.regex for h in real[1:])
        return v


def single_verdict(index: int, host: str | None, fail: Mapping[str, Any] | None, reason: str, text: str,
                   stamp: float | None) -> Verdict:
    """The verdict of :func:`multiline.find_single`'s result for an entry's ``text`` (without its date)."""
    if host is not None:
        assert fail is not None
        ip = fail.get("ip")  # as _host_of
        return verdict_of(host if ip is None else str(ip), stamp, fail, text, index)
    if fail is not None:
        return Verdict("ignored", "matched a no-failure or pending pattern", time=stamp, regex=index,
                       user=_user(fail), fields=fail)
    return no_failure(reason, stamp, None)


def no_failure(reason: str, stamp: float | None, some: Hit | None) -> Verdict:
    if reason.startswith("no failregex") or reason.startswith("prefregex"):
        return Verdict("missed", reason, time=stamp)
    return Verdict("ignored", reason or "matched a no-failure or pending pattern", time=stamp,
                   regex=some.regex if some else -1, user=_user(some.fail) if some else "",
                   fields=some.fail if some else {})


def _host_of(hit: Hit) -> str:
    ip = hit.fail.get("ip")
    return str(ip) if ip is not None else str(hit.fid)


def _user(fail: Mapping[str, Any]) -> str:
    user = fail.get("user")
    return user if isinstance(user, str) else ""


#: raw host text → canonical address, for the addresses seen lately (a log repeats its attackers).
_CANONICAL: dict[str, str] = {}
_CANONICAL_MAX = 4096


def _canonical(raw: str) -> str:
    host = _CANONICAL.get(raw)
    if host is None:
        host = R.canonical_address(raw)
        if len(_CANONICAL) >= _CANONICAL_MAX:
            _CANONICAL.clear()
        _CANONICAL[raw] = host
    return host


def verdict_of(raw: str, stamp: float | None, fields: Mapping[str, Any], matched: str, index: int) -> Verdict:
    user = fields.get("user")
    if not isinstance(user, str):
        user = ""
    try:
        host = _canonical(raw)
    except ValueError:
        return Verdict("missed", f"host {raw[:80]!r} is not an IP address (names are never resolved)",
                       None, raw, index, stamp, user, fields)
    return Verdict("matched", "", Failure(host, stamp, fields, matched, index), host, index, stamp, user, fields)


# -- loading ---------------------------------------------------------------------------------------------
class _Options:
    """Option lookup for one filter: jail args > [Init] > [Definition] > [DEFAULT]; ``<tag>`` expansion."""

    def __init__(self, ini: Ini, args: Mapping[str, str], logtype: str | None) -> None:
        self.ini = ini
        init = {k: ini.get(INIT, k) for k in ini.options(INIT)} if ini.has_section(INIT) else {}
        self.args = {k.lower(): v for k, v in args.items()}
        if logtype is not None and "logtype" not in self.args:
            self.args["logtype"] = logtype
        self.vars: dict[str, str] = {**init, **{"known/" + k: v for k, v in init.items()}, **self.args}

    def where(self, key: str) -> Value:
        found = self.ini.value(DEFINITION, key) or self.ini.value(INIT, key)
        path = self.ini.paths[-1] if self.ini.paths else "<filter>"
        return found or Value("", path, 0)

    def error(self, key: str, reason: str, line: int | None = None) -> FilterError:
        v = self.where(key)
        return FilterError(v.path, v.line if line is None else line, DEFINITION, key, reason)

    def raw(self, key: str) -> str | None:
        """Interpolated (``%(x)s``) value, tags not yet expanded; None when absent."""
        low = key.lower()
        if low in self.vars:
            return self.vars[low]
        if "/" in low:
            sec, _, opt = key.partition("/")
            if sec.lower() == "known":
                v = self.ini.sections.get(KNOWN_PREFIX + DEFINITION, {}).get(opt.lower())
                if v is not None:
                    return self.ini.interpolate(DEFINITION, opt, v, vars=self.vars)
                sec = DEFINITION
            elif sec.lower() == "default":
                sec = "DEFAULT"
            if not self.ini.has(sec, opt):
                return None
            return self.ini.get(sec, opt)
        if not self.ini.has(DEFINITION, low):
            return None
        return self.ini.get(DEFINITION, low, vars=self.vars)

    def get(self, key: str) -> str | None:
        """Interpolated and tag-expanded value."""
        text = self.raw(key)
        return None if text is None else self.expand(key, text)

    def expand(self, key: str, text: str) -> str:
        """Replace ``<name>`` tags pass by pass (innermost first, so ``<rules-<mode>>`` works)."""
        for _ in range(MAX_TAG_PASSES):
            changed = False

            def subst(m: re.Match[str]) -> str:
                nonlocal changed
                name = m.group(1)
                repl = self.raw(name)
                if repl is None:
                    return m.group()
                if name == key.lower():
                    raise self.error(key, f"tag <{name}> refers to itself")
                changed = True
                return repl

            text = _CONF_TAG.sub(subst, text)
            if not changed:
                return text
            if len(text) > MAX_EXPANDED:
                break
        raise self.error(key, "tags expand recursively (or beyond 1 MB)")


def _compile(opts: _Options, key: str, text: str, index: int, multiline: bool = False) -> Any:
    v = opts.where(key)
    raw_lines = [t.strip() for t in v.text.split("\n")]
    line = v.line_of(raw_lines.index(text)) if text in raw_lines else v.line
    try:
        return compile_regex(text, multiline=multiline)
    except (re.error, ValueError, OverflowError, RecursionError) as exc:
        raise opts.error(key, f"regex {index + 1} does not compile: {exc}: {text[:120]!r}", line) from None


def _regex_list(opts: _Options, key: str, multiline: bool) -> tuple[Any, ...]:
    text = opts.get(key) or ""
    lines = [t for t in (s.strip() for s in text.split("\n"))]
    return tuple(_compile(opts, key, t, i, multiline) for i, t in enumerate(lines) if t)


def _maxlines(opts: _Options) -> int:
    text = (opts.get("maxlines") or "").strip()
    if not text:
        return 1
    if not text.isdigit() or not 0 < int(text) <= 1000:
        raise opts.error("maxlines", f"maxlines = {text}: a number from 1 to 1000")
    return int(text)


def _rules(opts: _Options, hostfield: str) -> _Rules:
    maxlines = _maxlines(opts)
    multi = maxlines > 1
    pref_text = opts.get("prefregex")
    pref = _compile(opts, "prefregex", pref_text, 0, multi) if pref_text and pref_text.strip() else None
    if pref is not None and "content" not in pref.groupindex:
        raise opts.error("prefregex", "prefregex needs <F-CONTENT>...</F-CONTENT>")
    fails = _regex_list(opts, "failregex", multi)
    for i, pat in enumerate(fails):
        if not has_failure_id(pat) and not (pref is not None and has_failure_id(pref)):
            raise opts.error("failregex", f"regex {i + 1} has no <HOST>, <ADDR>, <IP4>, <IP6>, <F-ID> or <F-MLFID>")
    if not fails and not hostfield:
        raise opts.error("failregex", "a filter needs a failregex or a hostfield")
    try:
        dates = DateDetector.parse(opts.get("datepattern") or "")
    except ValueError as exc:
        raise opts.error("datepattern", str(exc)) from None
    dispatch = Dispatch.build(fails) if not multi else None
    return _Rules(Rules(pref, fails, _regex_list(opts, "ignoreregex", multi), maxlines, dispatch), dates)


def filter_path(filter_dir: Path, name: str) -> Path:
    """``filter.d/NAME.conf``; a name with a path separator or starting with a dot is refused."""
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise FilterError(str(filter_dir), 0, "-", "filter", f"bad filter name {name!r}")
    return filter_dir / f"{name}.conf"


def load_filter(filter_dir: Path, name: str, args: Mapping[str, str] | None = None) -> Filter:
    """Load ``filter_dir/NAME.conf`` with its layers; ``args`` are the jail's ``filter = NAME[k=v]``."""
    ini = read_layered(filter_path(filter_dir, name))
    return filter_from_ini(ini, name, args or {})


def filter_from_ini(ini: Ini, name: str, args: Mapping[str, str]) -> Filter:
    """Build a Filter from an already read Ini (tests and ``test-filter FILE``)."""
    if not ini.has_section(DEFINITION):
        path = ini.paths[-1] if ini.paths else name
        raise FilterError(path, 0, DEFINITION, "-", "no [Definition] section")
    fixed = {k.lower() for k in args} & {"logtype"}
    line_opts = _Options(ini, args, None if fixed else "file")
    rec_opts = _Options(ini, args, None if fixed else "journal")
    hostfield = (line_opts.get("hostfield") or "").strip()
    if hostfield and not field_name(hostfield):
        raise line_opts.error("hostfield", f"{hostfield!r} is not a journal field name")
    try:
        jm = parse_journalmatch(rec_opts.get("journalmatch") or "")
    except ValueError as exc:
        raise rec_opts.error("journalmatch", str(exc)) from None
    return Filter(
        name=name,
        path=ini.paths[-1] if ini.paths else name,
        journalmatch=jm,
        hostfield=hostfield,
        line_rules=_rules(line_opts, hostfield),
        record_rules=_rules(rec_opts, hostfield),
    )


def iter_filter_names(filter_dir: Path) -> Iterator[str]:
    """Names of the filters shipped in ``filter_dir`` (``*.conf``, sorted)."""
    for p in sorted(filter_dir.glob("*.conf")):
        yield p.stem

