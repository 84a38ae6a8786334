"""fail2ban's regular expressions as it writes them → compiled Python patterns.

Before compiling, fail2ban rewrites a failregex / ignoreregex / prefregex in three ways, and so do we:

- tags: ``<HOST>``, ``<ADDR>``, ``<IP4>``, ``<IP6>``, ``<DNS>``, ``<CIDR>``, ``<SUBNET>`` (and their
  ``<F-…/>`` forms), ``<F-ID/>``, ``<F-PORT/>``, ``<SKIPLINES>`` (multi-line), and ``<F-NAME>…</F-NAME>``
  named groups (``<F-USER>`` → group ``user``; ``<F-ID>`` → ``fid``; ``<F-PORT>`` → ``fport``). A closing
  tag that was never opened, and any other ``<word>``, stay literal.
- inline flags inside a group: ``((?i)a|b)`` and ``(?:(?i)a|b)`` become the scoped ``(?i:a|b)``, which Python
  accepts in the middle of a pattern (a global flag there is an error since Python 3.11).
- groups named ``alt_NAME[_N]`` fill ``NAME`` when it is empty; ``tuple_NAME[_N]`` join into a tuple with
  ``NAME`` (see :func:`match_groups`).

Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from re import _parser as sre_parser  # type: ignore[attr-defined]  # no public regex parser since 3.11
from typing import Any

# An IPv4 or IPv6 address as fail2ban spells it; ipaddress validates it afterwards.
IP4 = r"(?:\d{1,3}\.){3}\d{1,3}"
IP6 = r"(?:[0-9a-fA-F]{1,4}::?|::){1,7}(?:[0-9a-fA-F]{1,4}|(?<=:):)"
_IP4_G = rf"(?:::f{{4,6}}:)?(?P<ip4>{IP4})"
_IP6_G = rf"(?P<ip6>{IP6})"
_DNS_G = r"(?P<dns>[\w\-.^_]*\w)"
_CIDR_G = r"(?P<cidr>\d+)"
ADDR_G = rf"\[?(?:{_IP4_G}|{_IP6_G})\]?"
HOST_G = rf"(?:{ADDR_G}|{_DNS_G})"
_SUBNET_G = rf"\[?(?:{_IP4_G}|{_IP6_G})(?:/{_CIDR_G})?\]?"

_SIMPLE_TAGS = {
    "HOST": HOST_G,
    "ADDR": ADDR_G, "F-ADDR/": ADDR_G,
    "IP4": _IP4_G, "F-IP4/": _IP4_G,
    "IP6": _IP6_G, "F-IP6/": _IP6_G,
    "DNS": _DNS_G, "F-DNS/": _DNS_G,
    "CIDR": _CIDR_G, "F-CIDR/": _CIDR_G,
    "SUBNET": _SUBNET_G, "F-SUBNET/": _SUBNET_G,
    "F-ID/": r"(?P<fid>\S+)",
    "F-PORT/": r"(?P<fport>\w+)",
}
_GROUP_ALIASES = {"id": "fid", "port": "fport"}
#: Groups that identify a failure (the host groups, ``fid``), in fail2ban's order of preference.
FAILURE_ID_GROUPS = ("fid", "ip4", "ip6", "dns")
HOST_GROUPS = ("ip4", "ip6", "dns")
_REGEX_TAG = re.compile(r"</?[\w\-]+/?>")
_FTAG = re.compile(r"^(/?)F-([A-Z0-9_\-]+)$")
# "(" or "(?:" directly followed by a flags-only group such as "(?i)": the flags then scope that group.
_INNER_FLAGS = re.compile(r"(?<!\\)\((?:\?:)?(\(\?[a-z]+)\)")
_COMPOSED = re.compile(r"^(alt_|tuple_)(.*?)(?:_\d+)?$")


def group_name(tag: str) -> str:
    """``USER`` → ``user``, ``ALT_USER`` → ``alt_user``, ``ID`` → ``fid``."""
    low = tag.lower()
    return _GROUP_ALIASES.get(low, low)


def translate(regex: str) -> str:
    """A fail2ban regex → a Python regex (tags replaced, inline flags scoped)."""
    open_tags: set[str] = set()
    skiplines = [0]

    def subst(m: re.Match[str]) -> str:
        tag = m.group()
        name = tag[1:-1]
        if name == "SKIPLINES":
            n = skiplines[0]
            skiplines[0] += 1
            return rf"\n(?P<skiplines{n}>(?:(?:.*\n)*?))"
        simple = _SIMPLE_TAGS.get(name)
        if simple is not None:
            return simple
        fm = _FTAG.match(name)
        if fm is None:
            return tag
        closing, gname = fm.groups()
        if closing:
            return ")" if gname in open_tags else tag
        open_tags.add(gname)
        return f"(?P<{group_name(gname)}>"

    out = _REGEX_TAG.sub(subst, regex)
    return _INNER_FLAGS.sub(r"\1:", out)


def compile_regex(regex: str, *, multiline: bool = False) -> re.Pattern[str]:
    """Translate and compile; raises ``re.error`` (or ValueError for an empty regex)."""
    if not regex.strip():
        raise ValueError("empty regex")
    return re.compile(translate(regex), re.MULTILINE if multiline else 0)


# Keyed by id(): hashing a Pattern hashes its whole compiled program, a cost paid on every line otherwise.
# The entry keeps its pattern alive, so the id cannot be reused while the entry exists.
_COMPOSED_OF: dict[int, tuple[re.Pattern[str], tuple[tuple[str, str, str], ...]]] = {}


def _composed_groups(pat: re.Pattern[str]) -> tuple[tuple[str, str, str], ...]:
    """(group, kind, target) of a pattern's ``alt_``/``tuple_`` groups, sorted; computed once per pattern."""
    entry = _COMPOSED_OF.get(id(pat))
    if entry is not None and entry[0] is pat:
        return entry[1]
    out = []
    for key in sorted(k for k in pat.groupindex if k.startswith(("alt_", "tuple_"))):
        cm = _COMPOSED.match(key)
        if cm is not None:
            out.append((key, cm.group(1), group_name(cm.group(2))))
    found = tuple(out)
    _COMPOSED_OF[id(pat)] = (pat, found)
    return found


def match_groups(m: re.Match[str]) -> dict[str, Any]:
    """The match's named groups that matched, with ``alt_``/``tuple_`` groups folded into their target."""
    raw = m.groupdict()
    out: dict[str, Any] = {k: v for k, v in raw.items() if v is not None}
    for key, kind, target in _composed_groups(m.re):
        value = raw[key]
        if kind == "alt_":
            if value and not out.get(target):
                out[target] = value
        else:
            cur = out.get(target)
            out[target] = (*cur, value) if isinstance(cur, tuple) else (cur, value)
    return out


@dataclass(frozen=True, slots=True)
class Groups:
    """How to read one pattern's named groups fast, computed once per pattern: :attr:`read` gives what
    :func:`match_groups` gives, from ``m.groups()`` (a tuple, several times cheaper than ``m.groupdict()``)."""

    names: tuple[str | None, ...]  # the name of each group by number (from 1); None: unnamed
    composed: tuple[tuple[str, str, str], ...]
    #: match → its named groups that matched, ``alt_``/``tuple_`` folded (a function made for this pattern).
    read: Callable[[re.Match[str]], dict[str, Any]]

    @classmethod
    def of(cls, pat: re.Pattern[str]) -> Groups:
        names: list[str | None] = [None] * pat.groups
        for name, number in pat.groupindex.items():
            names[number - 1] = name
        composed = _composed_groups(pat)
        plain = _reader(tuple(names))
        return cls(tuple(names), composed, _folding(plain, composed) if composed else plain)


def _reader(names: tuple[str | None, ...]) -> Callable[[re.Match[str]], dict[str, Any]]:
    """A function reading these groups as straight-line code: ``g0, _, g2 = m.groups()``, then one test per
    named group (about three times faster than a loop over the names). The names are the pattern's group
    names, which ``re`` allows only as identifiers; they enter the code as string literals (``repr``)."""
    if not any(names):
        return lambda m: {}
    if not all(n is None or n.isidentifier() for n in names):  # cannot happen (re checks); never exec it
        raise ValueError(f"bad group names {names!r}")
    targets = [f"g{i}" if n else "_" for i, n in enumerate(names)]
    body = [f"    {', '.join(targets)}, = m.groups()", "    out = {}"]
    body += [f"    if g{i} is not None: out[{n!r}] = g{i}" for i, n in enumerate(names) if n]
    code = "def read(m):\n" + "\n".join(body) + "\n    return out\n"
    space: dict[str, Any] = {}
    exec(code, {"__builtins__": {}}, space)  # noqa: S102  # generated above from checked identifiers
    reader: Callable[[re.Match[str]], dict[str, Any]] = space["read"]
    return reader


def _folding(plain: Callable[[re.Match[str]], dict[str, Any]], composed: tuple[tuple[str, str, str], ...]
             ) -> Callable[[re.Match[str]], dict[str, Any]]:
    def read(m: re.Match[str]) -> dict[str, Any]:
        out = plain(m)
        for key, kind, target in composed:
            value = out.get(key)
            if kind == "alt_":
                if value and not out.get(target):
                    out[target] = value
            else:
                cur = out.get(target)
                out[target] = (*cur, value) if isinstance(cur, tuple) else (cur, value)
        return out

    return read


def has_failure_id(pat: re.Pattern[str]) -> bool:
    """A failregex must capture a host, an ``<F-ID>`` or an ``<F-MLFID>`` (fail2ban's rule)."""
    return any(g in pat.groupindex for g in (*FAILURE_ID_GROUPS, "mlfid"))


def skipped_lines(m: re.Match[str]) -> list[str]:
    """The lines a ``<SKIPLINES>`` tag consumed in this match."""
    text = ""
    n = 0
    while f"skiplines{n}" in m.re.groupindex:
        part = m.group(f"skiplines{n}")
        if part is not None:
            text += part
        n += 1
    return text.splitlines()


_NUMBERED = re.compile(r"(?<!\\)(?:\\[1-9]|\(\?\([0-9]+\))")
_MAX_FIRST = 300  # a first-character set larger than this is not worth a table entry


def _first_chars(items: Any, ignore_case: bool) -> tuple[set[str] | None, bool]:
    """(characters a parsed sequence can start with, whether it can match the empty string); None: any."""
    out: set[str] = set()
    for op, arg in items:
        name = str(op)
        if name == "AT":
            continue  # zero width
        if name == "LITERAL":
            out |= _cased(chr(arg), ignore_case)
            return out, False
        if name == "IN":
            chars = _set_chars(arg, ignore_case)
            if chars is None:
                return None, False
            return out | chars, False
        if name == "SUBPATTERN":
            _group, add, _del, sub = arg
            first, empty = _first_chars(sub, ignore_case or bool(add & re.IGNORECASE))
        elif name == "BRANCH":
            first, empty = set(), False
            for alt in arg[1]:
                f, e = _first_chars(alt, ignore_case)
                if f is None:
                    return None, False
                first |= f
                empty = empty or e
        elif name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
            lo, _hi, sub = arg
            first, empty = _first_chars(sub, ignore_case)
            empty = empty or lo == 0
        else:  # lookarounds, conditionals, backreferences, ANY...: no table
            return None, False
        if first is None:
            return None, False
        out |= first
        if not empty:
            return out, False
    return out, True


def _cased(c: str, ignore_case: bool) -> set[str]:
    return {c, c.lower(), c.upper()} if ignore_case else {c}


def _set_chars(items: Any, ignore_case: bool) -> set[str] | None:
    chars: set[str] = set()
    for op, arg in items:
        name = str(op)
        if name == "LITERAL":
            chars |= _cased(chr(arg), ignore_case)
        elif name == "RANGE" and arg[1] - arg[0] < _MAX_FIRST:
            for code in range(arg[0], arg[1] + 1):
                chars |= _cased(chr(code), ignore_case)
        else:  # NEGATE, CATEGORY (\\d, \\w ...), big ranges
            return None
    return chars if len(chars) <= _MAX_FIRST else None


def anchored_first_chars(pat: re.Pattern[str]) -> set[str] | None:
    """The characters a pattern anchored at the text's start (``^`` first, no MULTILINE) can begin with;
    None when it is not anchored, may match the empty string, or no small set can be told."""
    src = pat.pattern
    if pat.flags & re.MULTILINE or not src.startswith("^") or _NUMBERED.search(src):
        return None
    try:
        parsed = sre_parser.parse(src, pat.flags)
    except (re.error, RecursionError):
        return None
    items = list(parsed)
    # "^a|b" parses as one top-level BRANCH: only a first item AT_BEGINNING anchors the whole pattern.
    if not items or str(items[0][0]) != "AT" or str(items[0][1]) != "AT_BEGINNING":
        return None
    first, empty = _first_chars(items[1:], bool(pat.flags & re.IGNORECASE))
    return None if empty or not first else first


@dataclass(frozen=True)
class Dispatch:
    """Which failregexes can match a text, by its first character (the others cannot: same order, same result)."""

    table: dict[str, tuple[int, ...]]
    always: tuple[int, ...]

    @classmethod
    def build(cls, patterns: tuple[re.Pattern[str], ...]) -> Dispatch:
        firsts = [anchored_first_chars(p) for p in patterns]
        always = tuple(i for i, f in enumerate(firsts) if f is None)
        chars = set().union(*(f for f in firsts if f is not None))
        table = {c: tuple(i for i, f in enumerate(firsts) if f is None or c in f) for c in chars}
        return cls(table, always)

    def candidates(self, text: str) -> tuple[int, ...]:
        return self.table.get(text[:1], self.always)
