"""Filters: a journal record or a log line → a Failure (an address to count), fail2ban-compatible.

A filter is ``filter.d/NAME.conf`` read with :func:`responder.inifile.read_layered` (``.local``, ``.d/``,
``[INCLUDES]``), options from ``[Definition]``, ``[Init]`` and the jail's ``NAME[key=value]`` arguments
(which win). docs/filters.md is the reference; the short version:

- ``journalmatch``: ``FIELD=value`` terms AND-ed, ``+`` starts an alternative (as ``journalctl``); checked
  on records only. A field named twice in one group is an OR of the values, as in journalctl.
- ``hostfield``: (ours) the record field that holds the address, e.g. ``PS_SRC``; no regex needed.
- ``prefregex`` (with ``<F-CONTENT>…</F-CONTENT>``), ``failregex`` (one per line), ``ignoreregex``.
- ``datepattern``: ``{^LN-BEG}``, ``{NONE}``, ``{DEFAULT}`` or strptime-like patterns (``%Y %m %d %H %M %S
  %b %a %f %z %y %e %k %ExY``); default: syslog and ISO dates anywhere in the line.
- Tags: ``<HOST>`` (address or name; a name is never resolved: it is a miss), ``<ADDR>``, ``<IP4>``,
  ``<IP6>``, ``<DNS>``, ``<F-NAME>…</F-NAME>`` groups, ``<F-ID/>``, ``<F-PORT/>``; ``<F-NOFAIL>`` and
  ``<F-MLFGAINED>`` mark a match that is not a failure. Unsupported, rejected: ``<SKIPLINES>``,
  ``maxlines`` > 1. ``<F-MLFID>``/``<F-MLFFORGET>`` are accepted as plain groups (no multi-line state).

Pure: no I/O except reading the filter's files; clocks are passed in.
"""

from __future__ import annotations

import calendar
import datetime as dt
import re
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from portsentinel import record as R

from .inifile import KNOWN_PREFIX, Ini, IniError, Value, read_layered

DEFINITION = "Definition"
INIT = "Init"
#: Longest text a regex is run on; longer lines are a miss (bounds the cost of a hostile line).
MAX_LINE = 8192
MAX_TAG_REPLACEMENTS = 1000


class FilterError(IniError):
    """A filter that cannot be used; names ``file:line: [section] key: reason`` like IniError."""


# -- results ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Failure:
    """A matched record or line: ``host`` is a canonical address (portsentinel.record.canonical_address)."""

    host: str
    time: float | None
    fields: Mapping[str, str]
    matched: str
    regex: int = -1  # index of the failregex that matched; -1 when the host came from ``hostfield``


Kind = Literal["match", "ignored", "missed"]


@dataclass(frozen=True)
class Verdict:
    """What a filter made of one entry: a failure, an ignored match, or a miss with its reason."""

    kind: Kind
    reason: str = ""
    failure: Failure | None = None
    host: str = ""  # the text captured as host, when there was one (also for misses)
    regex: int = -1


# -- regex tags ------------------------------------------------------------------------------------------
_IP4 = r"(?:\d{1,3}\.){3}\d{1,3}"
# Two to eight colon-separated hex groups with one optional "::"; validated by ipaddress afterwards.
_IP6 = r"(?:[0-9a-fA-F]{0,4}:){2,7}[0-9a-fA-F]{0,4}(?<=[0-9a-fA-F:])"
_DNS = r"[\w\-.^_]*\w"
_IP4_G = rf"(?:::[fF]{{4,6}}:)?(?P<ip4>{_IP4})"
_IP6_G = rf"(?P<ip6>{_IP6})"
_ADDR_G = rf"\[?(?:{_IP4_G}|{_IP6_G})\]?"
_DNS_G = rf"(?P<dns>{_DNS})"
_HOST_G = rf"(?:{_ADDR_G}|{_DNS_G})"

_SIMPLE_TAGS = {
    "HOST": _HOST_G,
    "ADDR": _ADDR_G,
    "F-ADDR/": _ADDR_G,
    "IP4": _IP4_G,
    "F-IP4/": _IP4_G,
    "IP6": _IP6_G,
    "F-IP6/": _IP6_G,
    "DNS": _DNS_G,
    "F-DNS/": _DNS_G,
    "F-ID/": r"(?P<fid>\S+)",
    "F-PORT/": r"(?P<fport>\w+)",
}
_GROUP_ALIASES = {"id": "fid", "port": "fport"}
_HOST_GROUPS = ("ip4", "ip6", "dns")
_REGEX_TAG = re.compile(r"</?[\w\-]+/?>")
_FTAG = re.compile(r"^(/?)F-([A-Z0-9_\-]+)$")
_CONF_TAG = re.compile(r"<([^ <>]+)>")


def translate_tags(regex: str) -> str:
    """Replace fail2ban's regex tags with Python regex; unknown tags stay literal (as in fail2ban)."""
    open_groups: set[str] = set()

    def subst(m: re.Match[str]) -> str:
        tag = m.group()
        name = tag[1:-1]
        if name == "SKIPLINES":
            raise ValueError("<SKIPLINES> (multi-line matching) is not supported")
        if name in _SIMPLE_TAGS:
            return _SIMPLE_TAGS[name]
        fm = _FTAG.match(name)
        if fm is None:
            return tag
        closing, gname = fm.groups()
        if closing:
            return ")" if gname in open_groups else tag
        open_groups.add(gname)
        low = gname.lower().replace("-", "_")
        return f"(?P<{_GROUP_ALIASES.get(low, low)}>"

    return _REGEX_TAG.sub(subst, regex)


# -- dates -----------------------------------------------------------------------------------------------
_MONTHS = {m.lower(): i for i, m in enumerate(calendar.month_abbr) if m}
_DIRECTIVES = {
    "%ExY": r"(?P<Y>20\d\d)",
    "%Y": r"(?P<Y>\d{4})",
    "%y": r"(?P<y>\d\d)",
    "%m": r"(?P<m>1[0-2]|0?[1-9])",
    "%d": r"(?P<d>3[01]|[12]\d|0?[1-9])",
    "%e": r"(?P<d>3[01]|[12]\d| ?[1-9])",
    "%H": r"(?P<H>2[0-3]|[01]?\d)",
    "%k": r"(?P<H>2[0-3]|[01]?\d| \d)",
    "%M": r"(?P<M>[0-5]\d)",
    "%S": r"(?P<S>[0-5]\d|60)",
    "%f": r"(?P<f>\d{1,6})",
    "%b": r"(?P<b>(?i:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec))",
    "%a": r"(?:(?i:mon|tue|wed|thu|fri|sat|sun))",
    "%z": r"(?P<z>Z|[+-]\d\d:?\d\d)",
    "%%": "%",
}
_DIRECTIVE_RE = re.compile("|".join(re.escape(k) for k in sorted(_DIRECTIVES, key=len, reverse=True)))
_SYSLOG = "(?:%a )?%b %e %k:%M:%S(?:\\.%f)?(?: %ExY)?"
_ISO = "%ExY-%m-%d(?:T| {1,2})%H:%M:%S(?:[.,]%f)?(?:\\s*%z)?"
_LN_BEG = "{^LN-BEG}"


def _date_regex(pattern: str) -> re.Pattern[str]:
    anchored = pattern.startswith(_LN_BEG)
    body = pattern[len(_LN_BEG) :] if anchored else pattern
    rx = _DIRECTIVE_RE.sub(lambda m: _DIRECTIVES[m.group()], body)
    if anchored:
        rx = r"^\s*" + rx
    elif not rx.startswith("^"):
        rx = r"(?<![\w])" + rx
    return re.compile(rx + r"(?![\w])")


@dataclass(frozen=True)
class DateRule:
    """Finds, parses and strips the date of a plain log line. No patterns: no date (``{NONE}``)."""

    patterns: tuple[re.Pattern[str], ...]

    @classmethod
    def parse(cls, text: str) -> DateRule:
        pats: list[re.Pattern[str]] = []
        for raw in (t.strip() for t in text.split("\n")):
            if not raw:
                continue
            if raw == "{NONE}":
                return cls(())
            if raw in ("{^LN-BEG}", "{DEFAULT}"):
                prefix = _LN_BEG if raw == "{^LN-BEG}" else ""
                pats += [_date_regex(prefix + _SYSLOG), _date_regex(prefix + _ISO)]
            elif "{DATE}" in raw or raw.upper() in ("EPOCH", "LEPOCH", "TAI64N"):
                raise ValueError(f"datepattern {raw!r} is not supported (use %-directives)")
            else:
                pats.append(_date_regex(raw))
        if not pats:
            pats = [_date_regex(_SYSLOG), _date_regex(_ISO)]
        return cls(tuple(pats))

    def strip(self, line: str, now: float) -> tuple[str, float | None]:
        """The line without its date (text before and after it joined) and the date's epoch time."""
        for pat in self.patterns:
            m = pat.search(line)
            if m is None:
                continue
            stamp = _to_epoch(m.groupdict(), now)
            if stamp is None:
                continue
            return line[: m.start()] + line[m.end() :], stamp
        return line, None


def _to_epoch(g: Mapping[str, str | None], now: float) -> float | None:
    try:
        num_month = g.get("m")
        month = int(num_month) if num_month else _MONTHS[(g.get("b") or "").lower()]
        day = int((g.get("d") or "").strip())
        hour, minute = int((g.get("H") or "0").strip()), int(g.get("M") or 0)
        second = min(int(g.get("S") or 0), 59)
        frac = int((g.get("f") or "0").ljust(6, "0"))
        short = g.get("y")
        year_txt = g.get("Y") or (("20" + short) if short else None)
        year = int(year_txt) if year_txt else time.localtime(now).tm_year
        stamp = dt.datetime(year, month, day, hour, minute, second, frac)
    except (KeyError, ValueError):
        return None
    z = g.get("z")
    if z:
        offset = 0 if z == "Z" else (int(z[1:3]) * 60 + int(z[-2:])) * (1 if z[0] == "+" else -1)
        return calendar.timegm(stamp.timetuple()) - offset * 60 + frac / 1e6
    epoch = time.mktime(stamp.timetuple()) + frac / 1e6
    if not year_txt and epoch > now + 86400:  # a year-less date in the future is last year's (as fail2ban)
        epoch = time.mktime(stamp.replace(year=year - 1).timetuple()) + frac / 1e6
    return epoch


_FIELD_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")


def _field_name(name: str) -> bool:
    """journald field names: ASCII upper-case letters, digits, underscore; not starting with a digit."""
    return bool(name) and len(name) <= 64 and set(name) <= _FIELD_CHARS and not name[0].isdigit()


# -- journalmatch ----------------------------------------------------------------------------------------
def parse_journalmatch(text: str) -> list[dict[str, str]]:
    """``A=1 B=2 + C=3`` → ``[{A: 1, B: 2}, {C: 3}]``; a field twice in a group splits it into OR-ed groups."""
    groups: list[list[tuple[str, str]]] = [[]]
    for term in text.split():
        if term == "+":
            groups.append([])
            continue
        name, eq, value = term.partition("=")
        if not eq or not _field_name(name):
            raise ValueError(f"journalmatch term {term!r} is not FIELD=value")
        groups[-1].append((name, value))
    out: list[dict[str, str]] = []
    for terms in groups:
        if not terms:
            continue
        alts: list[dict[str, str]] = [{}]
        for name, value in terms:
            if any(name in a for a in alts):
                alts = alts + [{**{k: v for k, v in a.items() if k != name}, name: value} for a in alts]
            else:
                for a in alts:
                    a[name] = value
        for a in alts:
            if a not in out:
                out.append(a)
    return out


def journal_line(fields: Mapping[str, str]) -> str:
    """A record as fail2ban formats a journal entry: ``[HOSTNAME] [IDENT[PID]:] MESSAGE``."""
    parts: list[str] = []
    if fields.get("_HOSTNAME"):
        parts.append(fields["_HOSTNAME"])
    ident = fields.get(R.F_IDENT) or fields.get("_COMM")
    if ident:
        pid = fields.get("SYSLOG_PID") or fields.get("_PID")
        parts.append(f"{ident}[{pid}]:" if pid else f"{ident}:")
    parts.append(fields.get(R.F_MESSAGE, ""))
    return " ".join(parts)


def record_time(fields: Mapping[str, str]) -> float | None:
    """``__REALTIME_TIMESTAMP`` (µs), else ``PS_TIME`` (seconds), else None."""
    for name, scale in (("__REALTIME_TIMESTAMP", 1e-6), (R.F_TIME, 1.0)):
        raw = fields.get(name)
        if raw:
            try:
                return float(raw) * scale
            except ValueError:
                continue
    return None


# -- compiled rules --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Rules:
    prefregex: re.Pattern[str] | None
    failregex: tuple[re.Pattern[str], ...]
    ignoreregex: tuple[re.Pattern[str], ...]
    dates: DateRule


@dataclass
class Filter:
    """A loaded filter. Use :meth:`examine_record` / :meth:`examine_line` for the reason of a miss."""

    name: str
    path: str
    journalmatch: list[dict[str, str]]
    hostfield: str
    line_rules: _Rules
    record_rules: _Rules

    # --- records (journal or JSON lines) ---
    def match_record(self, record: Mapping[str, str], now: float | None = None) -> Failure | None:
        return self.examine_record(record, now).failure

    def examine_record(self, record: Mapping[str, str], now: float | None = None) -> Verdict:
        if self.journalmatch and not any(
            all(record.get(k) == v for k, v in group.items()) for group in self.journalmatch
        ):
            return Verdict("missed", "journalmatch not satisfied")
        stamp = record_time(record)
        if self.hostfield and self.hostfield in record:
            text = journal_line(record)
            if _search_any(self.record_rules.ignoreregex, text[:MAX_LINE] + "\n") is not None:
                return Verdict("ignored", "ignoreregex matched")
            raw = record[self.hostfield]
            return _failure(raw, stamp, dict(record), record.get(R.F_MESSAGE, ""), -1)
        return self._examine_text(self.record_rules, journal_line(record), stamp, dict(record))

    # --- plain log lines ---
    def match_line(self, line: str, now: float | None = None) -> Failure | None:
        return self.examine_line(line, now).failure

    def examine_line(self, line: str, now: float | None = None) -> Verdict:
        line = line.rstrip("\r\n")
        if len(line) > MAX_LINE:
            return Verdict("missed", f"line longer than {MAX_LINE} characters")
        text, stamp = self.line_rules.dates.strip(line, time.time() if now is None else now)
        return self._examine_text(self.line_rules, text, stamp, {})

    def _examine_text(self, rules: _Rules, text: str, stamp: float | None, base: dict[str, str]) -> Verdict:
        if not rules.failregex:
            return Verdict("missed", "filter has no failregex")
        if len(text) > MAX_LINE:
            return Verdict("missed", f"text longer than {MAX_LINE} characters")
        buf = text + "\n"
        groups: dict[str, str] = {}
        if rules.prefregex is not None:
            pm = rules.prefregex.search(buf)
            if pm is None:
                return Verdict("missed", "prefregex did not match")
            groups = {k: v for k, v in pm.groupdict().items() if v is not None}
            buf = groups.pop("content", "") + "\n"
        found = _search_any(rules.failregex, buf)
        if found is None:
            return Verdict("missed", "no failregex matched")
        index, m = found
        groups.update({k: v for k, v in m.groupdict().items() if v is not None})
        if _search_any(rules.ignoreregex, buf) is not None:
            return Verdict("ignored", "ignoreregex matched", regex=index)
        host = next((groups[g] for g in _HOST_GROUPS if g in groups), "")
        if groups.get("nofail") or groups.get("mlfgained"):
            return Verdict("ignored", "matched a no-failure pattern (F-NOFAIL / F-MLFGAINED)", host=host,
                           regex=index)
        if not host:
            return Verdict("missed", f"failregex {index} matched but captured no host", regex=index)
        return _failure(host, stamp, {**base, **groups}, m.group(0).rstrip("\n"), index)


def _search_any(patterns: tuple[re.Pattern[str], ...], buf: str) -> tuple[int, re.Match[str]] | None:
    for i, pat in enumerate(patterns):
        m = pat.search(buf)
        if m is not None:
            return i, m
    return None


def _failure(raw: str, stamp: float | None, fields: dict[str, str], matched: str, index: int) -> Verdict:
    try:
        host = R.canonical_address(raw)
    except ValueError:
        return Verdict("missed", f"host {raw[:80]!r} is not an IP address (names are never resolved)",
                       host=raw, regex=index)
    return Verdict("match", failure=Failure(host, stamp, fields, matched, index), host=host, regex=index)


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
        count: dict[str, int] = {}
        pos = 0
        while True:
            m = _CONF_TAG.search(text, pos)
            if m is None:
                return text
            name = m.group(1)
            repl = None if name == key.lower() else self.raw(name)
            if name == key.lower() and self.raw(name) is not None:
                raise self.error(key, f"tag <{name}> refers to itself")
            if repl is None:
                pos = m.end()
                continue
            count[name] = count.get(name, 0) + 1
            if count[name] > 25 or sum(count.values()) > MAX_TAG_REPLACEMENTS:
                raise self.error(key, f"tag <{name}> expands recursively")
            text = text[: m.start()] + repl + text[m.end() :]
            pos = 0


def _compile(opts: _Options, key: str, text: str, index: int) -> re.Pattern[str]:
    v = opts.where(key)
    raw_lines = [t.strip() for t in v.text.split("\n")]
    line = v.line_of(raw_lines.index(text)) if text in raw_lines else v.line
    try:
        return re.compile(translate_tags(text))
    except (re.error, ValueError) as exc:
        raise opts.error(key, f"regex {index + 1} does not compile: {exc}: {text[:120]!r}", line) from None


def _regex_list(opts: _Options, key: str) -> tuple[re.Pattern[str], ...]:
    text = opts.get(key) or ""
    lines = [t for t in (s.strip() for s in text.split("\n"))]
    return tuple(_compile(opts, key, t, i) for i, t in enumerate(lines) if t)


def _has_host(pat: re.Pattern[str]) -> bool:
    # F-MLFID lets fail2ban take the host from an earlier line of the same session; we accept such a
    # regex (stock sshd.conf has some), and a match that captures no host is a miss.
    return any(g in pat.groupindex for g in (*_HOST_GROUPS, "fid", "mlfid"))


def _rules(opts: _Options, hostfield: str) -> _Rules:
    pref_text = opts.get("prefregex")
    pref = _compile(opts, "prefregex", pref_text, 0) if pref_text and pref_text.strip() else None
    if pref is not None and "content" not in pref.groupindex:
        raise opts.error("prefregex", "prefregex needs <F-CONTENT>...</F-CONTENT>")
    fails = _regex_list(opts, "failregex")
    for i, pat in enumerate(fails):
        if not _has_host(pat) and not (pref is not None and _has_host(pref)):
            raise opts.error("failregex", f"regex {i + 1} has no <HOST>, <ADDR>, <IP4>, <IP6> or <F-ID/>")
    if not fails and not hostfield:
        raise opts.error("failregex", "a filter needs a failregex or a hostfield")
    try:
        dates = DateRule.parse(opts.get("datepattern") or "")
    except ValueError as exc:
        raise opts.error("datepattern", str(exc)) from None
    return _Rules(pref, fails, _regex_list(opts, "ignoreregex"), dates)


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
    maxlines = line_opts.get("maxlines")
    if maxlines and maxlines.strip() not in ("", "1"):
        raise line_opts.error("maxlines", f"maxlines = {maxlines.strip()}: multi-line matching is not supported")
    hostfield = (line_opts.get("hostfield") or "").strip()
    if hostfield and not _field_name(hostfield):
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

