"""journald side of a filter: ``journalmatch`` terms, journal field names, an entry as fail2ban prints it.

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping

from portsentinel import record as R

_FIELD_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")


def field_name(name: str) -> bool:
    """journald field names: ASCII upper-case letters, digits, underscore; not starting with a digit."""
    return bool(name) and len(name) <= 64 and set(name) <= _FIELD_CHARS and not name[0].isdigit()


def parse_journalmatch(text: str) -> list[dict[str, str]]:
    """``A=1 B=2 + C=3`` → ``[{A: 1, B: 2}, {C: 3}]``; a field twice in a group splits it into OR-ed groups."""
    groups: list[list[tuple[str, str]]] = [[]]
    for term in text.split():
        if term == "+":
            groups.append([])
            continue
        name, eq, value = term.partition("=")
        if not eq or not field_name(name):
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
