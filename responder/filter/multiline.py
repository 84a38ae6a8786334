"""Matching one entry against a filter's regexes, with fail2ban's multi-line state.

An entry is a *tuple line* ``(before, date, after)``: the text around the date and the date's own text (regexes
see ``before + after``). State carried between entries, per filter:

- ``maxlines`` > 1: the last N entries are searched together, joined by newlines (regexes compiled with
  ``re.MULTILINE``); the lines a match used are dropped from the buffer. ``<SKIPLINES>`` lines stay.
- ``<F-MLFID>`` (a connection or session id): what a match captured is merged into the state of that id, so
  a later line without an address (sshd's ``Disconnecting: Too many authentication failures``) gets the
  address of an earlier line of the same session. ``<F-NOFAIL>`` marks a match that is no failure by itself,
  ``<F-MLFGAINED>`` a success that clears the session's pending failures, ``<F-MLFFORGET>`` the session's end.
  A session with failures pending, or with two different users, turns a later no-failure line into a failure.
  At most :data:`MLFID_MAX` sessions are kept, each for :data:`MLFID_TTL` seconds.

Pure: the clock is passed in.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from portsentinel.responder.filter.regexes import Dispatch, Groups, match_groups, skipped_lines

TupleLine = tuple[str, str, str]
Fail = dict[str, Any]
MLFID_MAX = 100
MLFID_TTL = 300.0
#: Matched lines kept per session (a long session cannot grow without bound).
MAX_MATCHES = 50


@dataclass(frozen=True)
class Rules:
    prefregex: re.Pattern[str] | None
    failregex: tuple[re.Pattern[str], ...]
    ignoreregex: tuple[re.Pattern[str], ...]
    maxlines: int = 1
    #: Which failregexes can match, by the text's first character (regexes.Dispatch); None: try them all.
    dispatch: Dispatch | None = None

    #: fail2ban checks ignoreregex before the failregexes when there are far fewer of them (set below).
    ignore_first: bool = field(init=False, default=False)

    #: How to read the groups of the prefregex and of each failregex (regexes.Groups), computed once.
    pref_groups: Groups | None = field(init=False, default=None)
    fail_groups: tuple[Groups, ...] = field(init=False, default=())

    #: What :func:`scan_texts` runs, bound once: each failregex's search and group reader, the first-character
    #: table of the dispatch and the candidates of any other first character.
    searches: tuple[Callable[[str], re.Match[str] | None], ...] = field(init=False, default=(), compare=False)
    reads: tuple[Callable[[re.Match[str]], Fail], ...] = field(init=False, default=(), compare=False)
    table: dict[str, tuple[int, ...]] = field(init=False, default_factory=dict, compare=False)
    always: tuple[int, ...] = field(init=False, default=(), compare=False)

    def __post_init__(self) -> None:
        first = bool(self.ignoreregex) and len(self.ignoreregex) < len(self.failregex) - 2
        object.__setattr__(self, "ignore_first", first)
        if self.prefregex is not None:
            object.__setattr__(self, "pref_groups", Groups.of(self.prefregex))
        object.__setattr__(self, "fail_groups", tuple(Groups.of(p) for p in self.failregex))
        object.__setattr__(self, "searches", tuple(p.search for p in self.failregex))
        object.__setattr__(self, "reads", tuple(g.read for g in self.fail_groups))
        if self.dispatch is not None:
            object.__setattr__(self, "table", self.dispatch.table)
            object.__setattr__(self, "always", self.dispatch.always)
        else:
            object.__setattr__(self, "always", tuple(range(len(self.failregex))))


@dataclass(slots=True)
class Hit:
    """A failregex match. ``fid``: the host text (or ``<F-ID>``); None while the session's host is unknown."""

    regex: int
    fid: str | None
    time: float | None
    fail: Fail

    @property
    def nofail(self) -> bool:
        return bool(self.fail.get("nofail"))


@dataclass
class MatchState:
    """What a filter remembers between entries (one per filter and source)."""

    buffer: list[TupleLine] = field(default_factory=list)
    sessions: OrderedDict[str, tuple[Fail, float]] = field(default_factory=OrderedDict)
    last_date: float | None = None
    last_date_text: str = ""

    def remember(self, mlfid: str, fail: Fail, now: float) -> None:
        while len(self.sessions) >= MLFID_MAX:
            self.sessions.popitem(last=False)
        self.sessions[mlfid] = (fail, now + MLFID_TTL)


def joined(lines: list[TupleLine]) -> str:
    return "\n".join(t[0] + t[2] for t in lines) + "\n"


def _split(m: re.Match[str], org: list[TupleLine]) -> tuple[list[TupleLine], list[TupleLine]]:
    """(lines the match used, lines it did not use) of the searched buffer."""
    if len(org) <= 1:
        return list(org), []
    s = m.string
    first = s.rfind("\n", 0, m.start() + 1) + 1
    end_nl = s.find("\n", max(m.end() - 1, 0))
    last = len(s) if end_nl < 0 else end_nl + 1
    l1, l2 = s.count("\n", 0, first), s.count("\n", 0, last)
    used, rest = list(org[l1:l2]), list(org[:l1])
    n = 0
    for skipped in skipped_lines(m):
        for k, t in enumerate(used[n:]):
            if t[0] + t[2] == skipped:
                rest.append(used.pop(n + k))
                n += k
                break
    rest.extend(org[l2:])
    return used, rest


def _ignored(rules: Rules, state: MatchState, buf: str, org: list[TupleLine],
             used: list[TupleLine] | None, rest: list[TupleLine] | None, check_all: bool) -> bool:
    if used is not None and rules.maxlines > 1:
        buf = joined(used)
    for pat in rules.ignoreregex:
        if pat.search(buf) is not None:
            if rest is not None and (not check_all or rules.maxlines > 1):
                state.buffer = rest
            return True
    return False


def _merge(state: MatchState, mlfid: str, fail: Fail, used: list[str], now: float) -> Fail:
    """Fold this match into its session (fail2ban's rules for no-failure, gained, forget and users)."""
    sessions = state.sessions
    entry = sessions.get(mlfid)
    known: Fail | None = None
    if entry is not None:
        if entry[1] > now:
            known = entry[0]
        else:
            del sessions[mlfid]
    gained = bool(fail.get("mlfgained"))
    nofail = gained or bool(fail.get("nofail"))
    if gained and not fail.get("nofail"):
        fail["nofail"] = fail["mlfgained"]
    forget = bool(fail.pop("mlfforget", None))
    users: set[str] | None = None
    if known is not None:
        users = _add_user(known, fail.get("user"))
        was_nofail = bool(known.pop("nofail", None))
        was_nofail = bool(known.pop("mlfgained", None)) or was_nofail
        if gained:
            known.pop("mlfpending", None)
        if not was_nofail and not known.get("mlfpending", 0):
            known.pop("matches", None)
        for k, v in fail.items():
            if v is not None:
                known[k] = v
        fail = known
        if forget:
            sessions.pop(mlfid, None)
    elif not forget:
        users = _add_user(fail, fail.get("user"))
        state.remember(mlfid, fail, now)
    if fail.pop("mlfpending", 0) or (users and len(users) > 1):
        fail.pop("nofail", None)
        fail.pop("mlfgained", None)
        nofail = gained = False
    if not nofail:
        matches = fail.pop("nofail-matches", []) + fail.get("matches", [])
        if not gained:
            matches += used
        fail["matches"] = matches[-MAX_MATCHES:]
    elif not forget:
        fail["nofail-matches"] = (fail.get("nofail-matches", []) + used)[-MAX_MATCHES:]
    return fail


def _add_user(fail: Fail, user: Any) -> set[str] | None:
    users: set[str] | None = fail.get("users")
    if user:
        if not users:
            users = set()
            fail["users"] = users
        users.add(user)
    return users


def find_single(rules: Rules, state: MatchState, text: str, *, now: float) -> tuple[int, str | None, Fail | None, str]:
    """:func:`find_failures` for ``maxlines`` = 1 outside check-all mode (every line of a usual filter), on
    the entry's text without its date: the same result without the line buffer, which one line never needs.
    Returns (failregex index, host, captures, reason): index -1 and captures None when no failregex matched
    (or the match was ignored, or its host is still pending); host None for a match that is no failure.

    Two steps: :func:`scan_single` (the regexes: no state) and :func:`settle_single` (the sessions)."""
    index, fail, reason = scan_single(rules, text)
    if fail is None:
        return -1, None, None, reason
    return settle_single(state, index, fail, text, now)


#: Why :func:`scan_single` found no failure, by code (its index, -1 - code: see :func:`scan_texts`).
SCAN_REASONS = ("no failregex matched", "prefregex did not match", "ignoreregex matched")
#: What :func:`scan_texts` gives for a text it was not to scan (None).
NOT_SCANNED = -1 - len(SCAN_REASONS)
Scanned = tuple[int, Fail | None]
_NO_MATCH, _NO_PREFIX, _IGNORED, _SKIPPED = ((-1 - code, None) for code in range(len(SCAN_REASONS) + 1))


def scan_single(rules: Rules, text: str) -> tuple[int, Fail | None, str]:
    """The regex work of :func:`find_single`, which needs no state (so it may run anywhere, in any order):
    (failregex index, its captures merged over the prefregex's, "") for a match; (-1 - code, None, reason)
    when there is none, ``reason`` being ``SCAN_REASONS[code]``."""
    index, fail = scan_texts(rules, (text,))[0]
    return index, fail, "" if fail is not None else SCAN_REASONS[-1 - index]


def scan_texts(rules: Rules, texts: Iterable[str | None]) -> list[Scanned]:
    """:func:`scan_single` for many texts, in one loop: (index, captures) or (-1 - code, None) for each;
    ``(NOT_SCANNED, None)`` for a None."""
    out: list[Scanned] = []
    append = out.append
    ignore = rules.ignoreregex
    ignore_first = rules.ignore_first
    pref = rules.prefregex.search if rules.prefregex is not None else None
    pref_read = rules.pref_groups.read if rules.pref_groups is not None else None
    searches, reads, table, always = rules.searches, rules.reads, rules.table, rules.always
    for text in texts:
        if text is None:
            append(_SKIPPED)
            continue
        buf = text + "\n"
        if ignore_first and _any_search(ignore, buf):
            append(_IGNORED)
            continue
        pre: Fail | None = None
        if pref is not None:
            pm = pref(buf)
            if pm is None:
                append(_NO_PREFIX)
                continue
            assert pref_read is not None
            pre = pref_read(pm)
            content = pre.pop("content", None)
            if content:
                buf = content + "\n"
        result: Scanned = _NO_MATCH
        for index in table.get(buf[:1], always):
            m = searches[index](buf)
            if m is None:
                continue
            fail = reads[index](m)
            if ignore and _any_search(ignore, buf):
                result = _IGNORED
            elif pre:
                pre.update(fail)
                result = (index, pre)
            else:
                result = (index, fail)
            break
        append(result)
    return out


def _any_search(patterns: tuple[re.Pattern[str], ...], text: str) -> bool:
    for pat in patterns:
        if pat.search(text) is not None:
            return True
    return False


def settle_single(state: MatchState, index: int, fail: Fail, text: str, now: float
                  ) -> tuple[int, str | None, Fail | None, str]:
    """The rest of :func:`find_single` for a match of :func:`scan_single`: its session (``<F-MLFID>``) and host.
    Entries must come here in their order."""
    mlfid = fail.get("mlfid")
    if mlfid is not None:
        fail = _merge(state, str(mlfid), fail, [text], now)
        if fail.get("nofail"):
            return -1, None, None, "matched a no-failure pattern (F-NOFAIL / F-MLFGAINED)"
    else:
        fail["matches"] = fail.get("matches", []) + [text]
    host = choose_host(fail)
    if host is None:
        fail["mlfpending"] = 1
        return -1, None, None, "matched, host not known yet (pending in its session)"
    return index, None if fail.get("nofail") else str(host), fail, ""


def choose_host(fail: Fail) -> Any:
    """fail2ban's host of a failure: its ``<F-ID>``, else its address or DNS name (an id other than the address
    keeps the address as ``ip``); None while neither is known (the session's host comes on a later line)."""
    fid = fail.get("fid")
    host = fail.get("ip4") or fail.get("ip6") or fail.get("dns")
    if host is None:
        return fid
    if fid is not None and fid != host:
        fail["ip"] = host
        return fid
    return host


def find_failures(rules: Rules, state: MatchState, line: TupleLine, date: float | None, *, now: float,
                  check_all: bool = False) -> tuple[list[Hit], str]:
    """The failregex matches of one entry, and why there is none (``""`` when something matched).

    ``check_all`` (fail2ban's test mode) tries every failregex instead of stopping at the first match.
    """
    if rules.maxlines > 1:
        state.buffer.append(line)
        state.buffer = state.buffer[-rules.maxlines:]
        buf: str | None = joined(state.buffer)
    else:
        state.buffer = [line]
        buf = line[0] + line[2] + "\n"
    org = state.buffer
    assert buf is not None
    if rules.ignore_first and _ignored(rules, state, buf, org, None, None, check_all):
        return [], "ignoreregex matched"
    pre: Fail = {}
    if rules.prefregex is not None:
        pm = rules.prefregex.search(buf)
        if pm is None:
            return [], "prefregex did not match"
        pre = match_groups(pm)
        content = pre.pop("content", None)
        if content:
            state.buffer, buf = [("", "", content)], content + "\n"
    hits: list[Hit] = []
    reason = "no failregex matched"
    order = rules.dispatch.candidates(buf) if rules.dispatch is not None else range(len(rules.failregex))
    for index in order:
        pat = rules.failregex[index]
        if buf is None:
            buf = joined(state.buffer)
        m = pat.search(buf)
        if m is None:
            continue
        fail: Fail = match_groups(m)
        used, rest = _split(m, org) if len(org) > 1 else (org, [])
        if rules.ignoreregex and _ignored(rules, state, buf, org, used, rest, check_all):
            buf, reason = None, "ignoreregex matched"
            if not check_all:
                break
            continue
        if not check_all or rules.maxlines > 1:
            state.buffer, buf = rest, None
        if pre:
            merged = dict(pre)
            merged.update(fail)
            fail = merged
        mlfid = fail.get("mlfid")
        if mlfid is not None:
            fail = _merge(state, str(mlfid), fail, [t[0] + t[2] for t in used], now)
            if fail.get("nofail") and not check_all:
                return hits, "matched a no-failure pattern (F-NOFAIL / F-MLFGAINED)"
        else:
            fail["matches"] = fail.get("matches", []) + [t[0] + t[2] for t in used]
        host = choose_host(fail)
        if host is None:
            fail["mlfpending"] = 1
            if not check_all:
                return hits, "matched, host not known yet (pending in its session)"
        if check_all and mlfid is not None:
            fail = dict(fail)
        hits.append(Hit(index, None if host is None else str(host), date, fail))
        if not check_all:
            break
    return hits, reason if not hits else ""
