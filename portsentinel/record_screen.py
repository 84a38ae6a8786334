"""Many JSON-lines records parsed and checked at once (the bulk path: a fleet catch-up, a flood of scan records).

:func:`screen_json_lines` is a fast screen in front of :func:`portsentinel.record.json_line_fields`, never in place
of it: a line it passes has exactly the fields the per-line check would return (every value already canonical:
the parsed object itself is returned, no copy), and every line it is not certain about comes back as ``None``, for
the caller to run the per-line check on (which returns its fields, or raises the RecordError naming the field).
The screen works per column: the records of one shape (the same field names in the same order, as one writer makes
them) are checked field by field over all of them, most checks one regular-expression match over the column's
joined text. The property test (tests/unit/test_record_screen.py) holds it to "never passes what the per-line check
refuses or changes".
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from typing import Any

from portsentinel import record as R

#: The C scanner of one strict JSON decoder (``json.loads`` without its per-call wrapping): a line is parsed by it
#: alone only when it is one JSON value from its first character to its last; anything else goes the long way.
_scan: Callable[[str, int], tuple[Any, int]] = json.scanner.make_scanner(json.JSONDecoder())  # type: ignore[attr-defined]

_INT = r"(?:0|[1-9][0-9]{0,8})"  # what record._int_field returns unchanged (and "0": int("0") is "0")
_PORT = r"(?:[1-5]?[0-9]{1,4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
_V4 = R.V4_CANONICAL.pattern


def _column(one: str) -> re.Pattern[str]:
    """A pattern matching a column joined by newlines, each value matching ``one`` (no newline inside)."""
    return re.compile(rf"(?:{one}\n)*{one}")


_INTS = _column(_INT)
_PORTS = _column(rf"(?!0[0-9]){_PORT}")
#: Canonical IPv4 addresses, one a line (joined by newlines, none after the last): also the restore's never-ban
#: screen (responder.core.guard).
V4_COLUMN = _V4S = _column(_V4)

#: Per shape (field names in order): the checks of its checked fields, or None when a name is not allowed (each
#: record of that shape goes the long way and is refused with its reason). Bounded like record._KNOWN.
_SHAPES: dict[tuple[str, ...], list[tuple[str, Callable[[str, str], str]]] | None] = {}
_SHAPES_MAX = 256


def _plan(names: tuple[str, ...]) -> list[tuple[str, Callable[[str, str], str]]] | None:
    if names in _SHAPES:
        return _SHAPES[names]
    plan: list[tuple[str, Callable[[str, str], str]]] | None = []
    if len(names) > R.MAX_FIELDS or R.F_MESSAGE not in names:
        plan = None
    else:
        for name in names:
            try:
                check = R.field_check(name)
            except R.RecordError:
                plan = None
                break
            if check is not None and plan is not None:
                plan.append((name, check))
    if len(_SHAPES) >= _SHAPES_MAX:
        _SHAPES.clear()
    _SHAPES[names] = plan
    return plan


def screen_json_lines(lines: Sequence[str]) -> list[dict[str, str] | None]:
    """For each line: its record's fields when the screen is certain they pass the schema unchanged (the parsed
    dict itself), else None (run :func:`portsentinel.record.json_line_fields` on that line)."""
    out: list[dict[str, str] | None] = []
    groups: dict[tuple[str, ...], list[int]] = {}
    scan = _scan
    for i, line in enumerate(lines):
        try:
            obj, end = scan(line, 0)
        except (StopIteration, ValueError, RecursionError):
            obj, end = None, -1
        if end != len(line) or type(obj) is not dict:
            out.append(None)
            continue
        out.append(obj)
        shape = tuple(obj)
        group = groups.get(shape)
        if group is None:
            groups[shape] = [i]
        else:
            group.append(i)
    for shape, idx in groups.items():
        plan = _plan(shape)
        bad = set(idx) if plan is None else _bad(shape, plan, [out[i] for i in idx], idx)  # type: ignore[misc]
        for i in bad:
            out[i] = None
    return out


def _bad(names: tuple[str, ...], plan: list[tuple[str, Callable[[str, str], str]]], recs: list[dict[str, Any]],
         idx: list[int]) -> set[int]:
    """The indexes (from ``idx``) of the records of one shape that the screen is not certain about."""
    bad: set[int] = set()
    checks = dict(plan)
    for name in names:
        col = [r[name] for r in recs]
        joined: str | None
        try:
            joined = "\n".join(col)
        except TypeError:  # a value that is not a string (an integer is converted by the long way)
            bad.update(i for i, v in zip(idx, col, strict=True) if type(v) is not str)
            col = [v if type(v) is str else "" for v in col]  # (the others still checked below)
            joined = None
        if max(map(len, col)) > R.MAX_VALUE:
            bad.update(i for i, v in zip(idx, col, strict=True) if len(v) > R.MAX_VALUE)
        check = checks.get(name)
        if check is None:
            continue  # free text
        pattern = _PORTS if name == R.F_PORT else _INTS if name in R.INT_FIELDS else _V4S if name in R.ADDR_FIELDS \
            else None
        if (pattern is not None and joined is not None and joined.count("\n") == len(col) - 1
                and pattern.fullmatch(joined)):
            continue  # (no value holds a newline: each line of the joined text is one value)
        wrong = set()
        for v in set(col):  # each distinct value once (an enum column has a few)
            try:
                if check(name, v) != v:
                    wrong.add(v)
            except (R.RecordError, ValueError):
                wrong.add(v)
        if wrong:
            bad.update(i for i, v in zip(idx, col, strict=True) if v in wrong)
    return bad

