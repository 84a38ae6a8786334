"""fail2ban's date templates: a ``datepattern`` value compiled to the regexes that find a date in a line.

A filter's ``datepattern`` holds one template per line; without one, fail2ban's default list is used:

- ``{DEFAULT}`` (or nothing): the default templates, each first anchored at the line start (``{^LN-BEG}``
  variant, tried first), then anywhere in the line at a word boundary;
- ``{^LN-BEG}``: only the templates anchored at the line start (up to two non-word characters before);
- ``{NONE}``: no date (the entry's time is the time it is read); ``{DATE}`` inside a pattern stands for each
  default template (``^<\\d+>\\d+\\s+{DATE}`` reads RFC 5424);
- ``EPOCH`` / ``LEPOCH`` (seconds, or milli/microseconds), ``TAI64N``, also as ``{EPOCH}`` in a pattern;
- a strptime-like pattern: ``%Y %y %m %d %e %H %k %I %l %M %S %f %p %a %A %b %B %z %Z %j %%`` and fail2ban's
  exact forms ``%ExY`` (a plausible year: 2000 to three years ahead) ``%Exy %Exm %Exd %ExH %ExM %ExS %Exk
  %Exl %ExZ %Exz``. ``{^LN-BEG}`` anchors it at the line start; ``{UNB}`` drops the word boundaries; ``**``
  at either end drops that boundary; a leading ``^`` anchors it.

Each template compiles to a regex whose first group is the date's text (:class:`Template`); its fields become
epoch seconds in :mod:`.date_fields`. Fractions of a second are dropped, except for epoch stamps (as fail2ban
does). The detector that tries them in fail2ban's order is :mod:`.datedetect`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from portsentinel.responder.filter.date_fields import FULL_MONTHS, ZONE_ABBR, strptime_groups


def _year_re(now_year: int) -> str:
    """``%ExY``: the decades from 2000 up to three years ahead, e.g. ``20[0-2]\\d``."""
    decades = range(200, (now_year + 3) // 10 + 1)
    return "(?P<Y>(?:" + "|".join(str(d) for d in decades) + r")\d)"


def _directives(now_year: int) -> dict[str, str]:
    day = r"(?P<d>[1-2]\d|[0 ]?[1-9]|3[0-1])"
    return {
        "%": "%",
        "a": r"(?P<a>mon|tue|wed|thu|fri|sat|sun)",
        "A": r"(?P<A>monday|tuesday|wednesday|thursday|friday|saturday|sunday)",
        "b": r"(?P<b>jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)",
        "B": "(?P<B>" + "|".join(sorted(FULL_MONTHS, key=len, reverse=True)) + ")",
        "d": day,
        "e": day,
        "f": r"(?P<f>[0-9]{1,6})",
        "H": r"(?P<H>[0-1]?\d|2[0-3])",
        "I": r"(?P<I>1[0-2]|0[1-9]|[1-9])",
        "j": r"(?P<j>36[0-6]|3[0-5]\d|[1-2]\d\d|0[1-9]\d|00[1-9]|[1-9]\d|0[1-9]|[1-9])",
        "k": r" ?(?P<H>[0-2]?\d)",
        "l": r" ?(?P<I>1?\d)",
        "m": r"(?P<m>0?[1-9]|1[0-2])",
        "M": r"(?P<M>[0-5]?\d)",
        "p": r"(?P<p>am|pm)",
        "S": r"(?P<S>[0-5]?\d|6[0-1])",
        "y": r"(?P<y>\d\d)",
        "Y": r"(?P<Y>\d{4})",
        "z": r"(?P<z>Z|UTC|GMT|[+-][01]\d(?::?\d{2})?)",
        "Z": r"(?P<Z>Z|[A-Z]{3,5})",
        "ExY": _year_re(now_year),
        "Exy": r"(?P<y>\d{2})",
        "Exm": r"(?P<m>0[1-9]|1[0-2])",
        "Exd": r"(?P<d>[1-2]\d|0[1-9]|3[0-1])",
        "ExH": r"(?P<H>[0-1]\d|2[0-3])",
        "ExM": r"(?P<M>[0-5]\d)",
        "ExS": r"(?P<S>[0-5]\d|6[0-1])",
        "Exk": r" ?(?P<H>[0-1]?\d|2[0-3])",
        "Exl": r" ?(?P<I>1[0-2]|\d)",
        "ExZ": rf"(?P<Z>{ZONE_ABBR})",
        "Exz": rf"(?P<z>(?:{ZONE_ABBR})?[+-][01]\d(?::?\d{{2}})?|{ZONE_ABBR})",
    }


DIRECTIVES = _directives(time.localtime().tm_year)
_DIRECTIVE_RE = re.compile(r"%(%|Ex[A-Za-z]|[A-Za-z])")
_ALPHA = re.compile(r"(?<!%)%[aAbBpc]")
# Shapes of a template regex (fail2ban's rules for where word boundaries go).
_FLAGS = re.compile(r"\(\?[a-z]+\)")
_CAPTURING = re.compile(r"(?<!\(\?)(?<!\\)\((?!\?)")
_WRAP = re.compile(r"^((?:\(\?\w+\))?\^?(?:\(\?\w+\))?)(.*?)(\$?)$", re.S)
_NO_BEGIN_BOUND = re.compile(r"^\(*(?:\(\?\w+\))?(?:\^|\(*\*\*|\((?:\?:)?\^)")
_NO_END_BOUND = re.compile(r"(?<!\\)(?:\$\)?|\\b|\\s|\*\*\)*)$")
_STARS = re.compile(r"^\(*(?:\(\?\w+\))?\(*\*\*|(?<!\\)\*\*\)*$")
_LINE_BEGIN = re.compile(r"^(?:\(\?\w+\))?(?:\^|\((?:\?:)?\^(?!\|))")
_EPOCH_TAG = re.compile(r"(?<!\\)\{(L?)EPOCH\}", re.IGNORECASE)
_DATE_TAG = re.compile(r"(?<!\\)\{DATE\}", re.IGNORECASE)
_EPOCH_RE = r"\d{10,11}\b(?:\.\d{3,6})?"
_LEPOCH_RE = r"\d{10,11}(?:\d{3}(?:\.\d{1,6}|\d{3})?)?"

#: fail2ban's default templates, in its order.
DEFAULT_PATTERNS = (
    r"%ExY(?P<_sep>[-/.])%m(?P=_sep)%d(?:T|  ?)%H:%M:%S(?:[.,]%f)?(?:\s*%z)?",
    r"(?:%a )?%b %d %k:%M:%S(?:\.%f)?(?: %ExY)?",
    r"(?:%a )?%b %d %ExY %k:%M:%S(?:\.%f)?",
    r"%d(?P<_sep>[-/])%m(?P=_sep)(?:%ExY|%Exy) %k:%M:%S",
    r"%d(?P<_sep>[-/])%b(?P=_sep)%ExY[ :]?%H:%M:%S(?:\.%f)?(?: %z)?",
    r"%m/%d/%ExY:%H:%M:%S",
    r"%m-%d-%ExY %k:%M:%S(?:\.%f)?",
    "EPOCH",
    r"{^LN-BEG}%H:%M:%S",
    r"^<%m/%d/%Exy@%H:%M:%S>",
    r"%Exy%Exm%Exd  ?%H:%M:%S",
    r"%b %d, %ExY %I:%M:%S %p",
    r"^%b-%d-%Exy %k:%M:%S",
    r"%ExY%Exm%Exd(?:T|  ?)%ExH%ExM%ExS(?:[.,]%f)?(?:\s*%z)?",
    r"(?:%Z )?(?:%a )?%b %d %k:%M:%S(?:\.%f)?(?: %ExY)?",
    r"(?:%z )?(?:%a )?%b %d %k:%M:%S(?:\.%f)?(?: %ExY)?",
    "TAI64N",
)


@dataclass
class Template:
    """One compiled date template. ``kind``: pattern, epoch, lepoch or tai64n; ``group``: the date text."""

    source: str
    regex: re.Pattern[str]
    kind: str = "pattern"
    group: int = 1
    anchored: bool = False
    hits: int = 0
    distance: int = 0x7FFFFFFF
    #: The same regex with its named groups not capturing (:func:`lean_regex`): as fast as it gets for where
    #: the date is; ``regex`` runs again only when the date's text changed, for its fields.
    lean: re.Pattern[str] = field(init=False)

    def __post_init__(self) -> None:
        self.lean = lean_regex(self.regex) if self.kind == "pattern" else self.regex

    def epoch(self, m: re.Match[str], now: float) -> float | None:
        if self.kind == "tai64n":
            return float(int(m.group(1)[2:17], 16))
        if self.kind in ("epoch", "lepoch"):
            text = m.group(self.group)
            value = float(text)
            if self.kind == "lepoch" and len(text) >= 13:
                value /= 1e6 if len(text) >= 16 and "." not in text else 1e3
            return value
        return strptime_groups(m.groupdict(), now)


_NAMED_GROUP = re.compile(r"(?<!\\)\(\?P<(\w+)>")
_NAMED_REFERENCE = re.compile(r"\(\?(?:P=|\()([A-Za-z_]\w*)\)")
_NUMBERED_REFERENCE = re.compile(r"\\[1-9]|\(\?\(\d")


#: Under ``re.IGNORECASE`` (Unicode), the letters that match more than their two ASCII cases (test_fastpath
#: checks this table against every code point).
CASE_EXTRA = {"i": "İı", "k": "\u212a", "s": "ſ"}


def _cased_words(words: str) -> str:
    """``jan|feb`` → ``(?-i:[jJ][aA][nN]|[fF][eE][bB])``: what ``(?i)`` matches, without per-character folding."""
    def cls(c: str) -> str:
        return "[" + c + c.upper() + CASE_EXTRA.get(c, "") + "]" if c.isalpha() else re.escape(c)

    return "(?-i:" + "|".join("".join(cls(c) for c in w) for w in words.split("|")) + ")"


#: The word directives' groups (%a %A %b %B %p) as lean_regex writes them under IGNORECASE.
_WORD_GROUPS = {f"(?P<{k}>{DIRECTIVES[k][6:-1]})": _cased_words(DIRECTIVES[k][6:-1]) for k in "aAbBp"}


def lean_regex(pat: re.Pattern[str]) -> re.Pattern[str]:
    """``pat`` with every ``(?P<name>`` that nothing refers to made ``(?:`` (and, under IGNORECASE, the day,
    month and am/pm words spelt in both cases): the same matches and the same group 1, with less work per
    search. ``pat`` itself when that cannot be told safely: group 1 is a named group, a group is referred to
    by number, or the rewrite does not keep exactly the groups it should."""
    if 1 in pat.groupindex.values() or _NUMBERED_REFERENCE.search(pat.pattern):
        return pat
    referred = set(_NAMED_REFERENCE.findall(pat.pattern))
    text = pat.pattern
    if pat.flags & re.IGNORECASE and not pat.flags & re.ASCII:
        for group, cased in _WORD_GROUPS.items():
            if group[4:group.index(">")] not in referred:
                text = text.replace(group, cased)
    try:
        lean = re.compile(_NAMED_GROUP.sub(lambda m: m.group() if m.group(1) in referred else "(?:", text),
                          pat.flags)
    except re.error:
        return pat
    kept = {name for name in pat.groupindex if name in referred}
    if set(lean.groupindex) != kept or lean.groups != 1 + len(kept) or pat.groups != 1 + len(pat.groupindex):
        return pat
    return lean


def _bounded(regex: str, begin: bool | str, end: bool) -> tuple[str, bool]:
    """Add fail2ban's word or line boundaries to a template regex; returns (regex, anchored)."""
    regex = regex.strip()
    flags = _FLAGS.search(regex)
    if flags:
        regex = _FLAGS.sub("", regex, count=1)
    bound_begin = bool(begin) and not _NO_BEGIN_BOUND.search(regex)
    bound_end = end and not _NO_END_BOUND.search(regex)
    if not _CAPTURING.search(regex):
        regex = _WRAP.sub(r"\1(\2)\3", regex)
    anchored = False
    if bound_begin:
        if begin == "start":
            regex = r"^(?:\W{0,2})?" + regex
            anchored = True
        else:
            regex = r"(?=^|\b|\W)" + regex
    if bound_end:
        regex += r"(?=\b|\W|$)"
    anchored = anchored or bool(_LINE_BEGIN.search(regex))
    regex = _STARS.sub(lambda m: m.group().replace("**", ""), regex)
    if flags:
        regex = flags.group() + regex
    return regex, anchored


def pattern_template(pattern: str) -> Template:
    """A ``%``-pattern (with ``{^LN-BEG}``, ``{UNB}``, ``{EPOCH}``) → a Template; ValueError when invalid."""
    body, begin, end = pattern, True, True
    if body.startswith("{UNB}"):
        body, begin, end = body[5:], False, False
    begin_mode: bool | str = begin
    if begin and body.startswith("{^LN-BEG}"):
        body, begin_mode = body[9:], "start"
    epoch = _EPOCH_TAG.search(body)
    if epoch:
        long_form = bool(epoch.group(1))
        inner = _LEPOCH_RE if long_form else _EPOCH_RE
        regex, anchored = _bounded("(" + _EPOCH_TAG.sub(_replacer(f"({inner})"), body) + ")", begin_mode, end)
        return Template(pattern, _compile(regex, pattern), "lepoch" if long_form else "epoch", 2, anchored)

    def directive(m: re.Match[str]) -> str:
        key = m.group(1)
        if key not in DIRECTIVES:
            raise ValueError(f"unknown date directive %{key} in {pattern!r}")
        return DIRECTIVES[key]

    regex = _DIRECTIVE_RE.sub(directive, body)
    if _ALPHA.search(body):
        regex = "(?iu)" + regex
    regex, anchored = _bounded(regex, begin_mode, end)
    return Template(pattern, _compile(regex, pattern), anchored=anchored)


def _compile(regex: str, pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(regex)
    except re.error as exc:
        raise ValueError(f"datepattern {pattern!r} does not compile: {exc}") from None


def special_template(name: str) -> Template | None:
    """``EPOCH``, ``LEPOCH``, ``TAI64N`` (also ``{^LN-BEG}``/``^``-anchored), else None."""
    key = name.upper()
    start = key.startswith(("{^LN-BEG}", "^"))
    bare = key.removeprefix("{^LN-BEG}").removeprefix("^")
    if bare in ("EPOCH", "LEPOCH"):
        inner = _LEPOCH_RE if bare == "LEPOCH" else _EPOCH_RE
        kind = bare.lower()
        if start:
            regex, _ = _bounded(rf"((?P<square>(?<=^\[))?{inner})(?(square)(?=\]))", "start", True)
        else:
            regex, _ = _bounded(rf"((?:^|(?P<square>(?<=^\[))|(?P<selinux>(?<=\baudit\()))"
                                rf"{inner})(?:(?(selinux)(?=:\d+\)))|(?(square)(?=\])))", False, True)
        return Template(name, re.compile(regex), kind, 1, start)
    if bare == "TAI64N":
        regex, _ = _bounded("@[0-9a-f]{24}", "start" if start else False, True)
        return Template(name, re.compile(regex), "tai64n", 1, start)
    return None


def _template(pattern: str) -> Template:
    return special_template(pattern) or pattern_template(pattern)


def _unbound(pattern: str) -> str:
    """A default template's pattern without its own boundaries, to stand in for ``{DATE}``."""
    for prefix in ("{UNB}", "{^LN-BEG}"):
        pattern = pattern.removeprefix(prefix)
    pattern = re.sub(r"^\((?:\?:)?\^\|\\b\|\\W\)", "", pattern)
    return re.sub(r"\(\?=\\b\|\\W\|\$\)$", "", pattern)


def _replacer(text: str) -> Callable[[re.Match[str]], str]:
    return lambda _m: text


def default_templates(line_begin_only: bool = False) -> list[Template]:
    """fail2ban's list: the line-start variants of the unanchored templates first, then all of them."""
    first: list[Template] = []
    rest: list[Template] = []
    for pat in DEFAULT_PATTERNS:
        tpl = _template(pat)
        if not pat.startswith(("{^LN-BEG}", "^")):
            first.append(_template("{^LN-BEG}" + pat))
        rest.append(tpl)
    out = first + rest
    return [t for t in out if t.anchored] if line_begin_only else out


def templates_for(line: str) -> list[Template] | None:
    """One line of a ``datepattern`` → its templates (``{DEFAULT}``, ``{^LN-BEG}``, ``{DATE}`` inside a pattern,
    a special name or a pattern); None for ``{NONE}``. ValueError names a bad pattern."""
    key = line if "%" in line else line.upper()
    if key == "{NONE}":
        return None
    if key in ("{^LN-BEG}", "{DEFAULT}"):
        return default_templates(key == "{^LN-BEG}")
    if _DATE_TAG.search(line):
        return [pattern_template(_DATE_TAG.sub(_replacer(_unbound(pat)), line))
                for pat in DEFAULT_PATTERNS if pat not in ("EPOCH", "TAI64N")]
    return [_template(line)]
