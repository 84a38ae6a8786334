"""The catch-up's fast paths decide exactly as the general ones: keys (a plain IPv4 key read by one match), ban
values (a value of encode_ban's shape read by one match) and the output lines (written without a Record)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from portsentinel import record as R
from portsentinel.fleet import codec as C
from portsentinel.fleet.applier import Line
from portsentinel.fleet.keys import BadKey, Key, decode_addr, parse_key, valid_name
from portsentinel.fleet.lines import json_lines, to_json_line, to_record

NOW = 1_764_490_000.0
MAXTIME = 30 * 86400.0
KEY = Key("a", "portsentinel", "203.0.113.7")


def _general(data: bytes, key: Key) -> C.Ban | str:
    """decode_ban's answer through the JSON parser: the same value with a blank after each comma (valid JSON,
    never of the fast shape)."""
    spaced = data.replace(b",", b", ")
    assert C.BAN_SHAPE.fullmatch(spaced) is None
    try:
        return C.decode_ban(spaced, key, NOW, MAXTIME)
    except C.BadValue as exc:
        return f"{type(exc).__name__}: {exc}"


def _fast(data: bytes, key: Key) -> C.Ban | str:
    try:
        return C.decode_ban(data, key, NOW, MAXTIME)
    except C.BadValue as exc:
        return f"{type(exc).__name__}: {exc}"


_numbers = st.one_of(st.integers(0, 10**12), st.floats(0, 2e9, allow_nan=False).map(lambda f: round(f, 3)),
                     st.sampled_from([NOW, NOW + 1, NOW - 1, NOW + 300, NOW + 301, NOW + MAXTIME, NOW + MAXTIME + 1]))


@given(addr=st.sampled_from(["203.0.113.7", "203.0.113.8", "2001:db8::7"]),
       jail=st.sampled_from(["portsentinel", "ssh", "x"]), until=_numbers, at=_numbers,
       scan=st.sampled_from(["", "syn", "xmas", "nope", "SYN"]), verified=st.integers(0, 2),
       offence=st.sampled_from([0, 1, 2, 999_999, 1_000_000, 1_000_001, 10**7]))
def test_the_fast_shape_decides_as_the_json_parser(addr: str, jail: str, until: float, at: float, scan: str,
                                                   verified: int, offence: int) -> None:
    data = json.dumps({"v": 1, "addr": addr, "jail": jail, "until": until, "scan": scan, "verified": verified,
                       "offence": offence, "at": at}, separators=(",", ":")).encode()
    assert _fast(data, KEY) == _general(data, KEY)


@given(st.binary(max_size=300), st.integers(0, 250))
def test_garbage_spliced_into_a_valid_value_is_never_accepted_unless_valid(junk: bytes, where: int) -> None:
    good = C.encode_ban(C.Ban(KEY.addr, KEY.jail, NOW + 60, "syn", 1, 2, NOW))
    data = good[:where] + junk + good[where:]
    try:
        ban = C.decode_ban(data, KEY, NOW, MAXTIME)
    except C.BadValue:
        return
    assert ban.addr == KEY.addr and ban.jail == KEY.jail and NOW < ban.until <= NOW + MAXTIME
    assert ban == C.decode_ban(json.dumps(json.loads(data)).encode(), KEY, NOW, MAXTIME)


def test_encoded_bans_take_the_fast_shape() -> None:
    data = C.encode_ban(C.Ban(KEY.addr, KEY.jail, NOW + 60.5, "syn", 1, 2, NOW - 0.25))
    assert C.BAN_SHAPE.fullmatch(data) is not None
    assert C.decode_ban(data, KEY, NOW, MAXTIME) == C.Ban(KEY.addr, KEY.jail, NOW + 60.5, "syn", 1, 2, NOW - 0.25)


def _key_general(text: str) -> Key | str:
    """parse_key's answer without the IPv4 match: the name checks and decode_addr."""
    parts = text.split(".")
    if len(parts) != 3 or not valid_name(parts[0]) or not valid_name(parts[1]):
        return "bad"
    try:
        return Key(parts[0], parts[1], decode_addr(parts[2]))
    except ValueError:
        return "bad"


def _key_fast(text: str) -> Key | str:
    try:
        return parse_key(text)
    except BadKey:
        return "bad"


@given(st.lists(st.one_of(st.integers(0, 300).map(str), st.sampled_from(["00", "01", "010", "255", "256", "", "a"])),
                min_size=2, max_size=6))
def test_the_ipv4_key_match_decides_as_decode_addr(parts: list[str]) -> None:
    text = "h.portsentinel." + "-".join(parts)
    assert _key_fast(text) == _key_general(text)


@pytest.mark.parametrize("text", ["h.j.1-2-3-4\n", "h.j.1-2-3-4 ", "h\n.j.1-2-3-4", "h.j.01-2-3-4", "h.j.1-2-3-4=32"])
def test_near_ipv4_keys_refused(text: str) -> None:
    with pytest.raises(BadKey):
        parse_key(text)


@pytest.mark.parametrize("line", [
    Line("ban", "203.0.113.7", "a", "portsentinel", NOW + 600.25, 1, "syn", 1, 3),
    Line("ban", "2001:db8::/64", "host-b", "ssh", NOW + 1, 3),
    Line("ban", "2001:db8::7", "host-b", "ssh", NOW - 5, 2, "", 0, 1_000_000),
    Line("unban", "203.0.113.7", "a", "portsentinel", NOW + 60, 0, "xmas"),
    Line("unban", "2001:db8::7", "a", "_unban", NOW + 60, 0),
])
def test_json_lines_are_the_records_lines(line: Line) -> None:
    text = to_json_line(line, NOW)
    assert text == R.to_json_line(to_record(line, NOW))
    assert R.from_json_line(text) == to_record(line, NOW)
    assert json_lines([line, line], NOW) == [text, text]


def test_a_batch_of_lines_is_the_records_lines() -> None:
    lines = [Line("ban", f"198.51.100.{i}", f"h{i % 3}", ("portsentinel", "ssh")[i % 2], NOW + 30 * i + 0.5, 1 + i % 4,
                  ("syn", "", "xmas")[i % 3], i % 2, 1 + i) for i in range(40)]
    # names JSON must escape (never in the bucket's grammar) go the general way, as does a network
    lines += [Line("ban", "198.51.100.77", 'h"q', "ssh", NOW + 9, 1, "syn"),
              Line("ban", "198.51.100.78", "h", "j\u00e9", NOW + 9, 1),
              Line("ban", "2001:db8::/64", "h", "ssh", NOW + 9, 2, "syn")]
    assert json_lines(lines, NOW) == [R.to_json_line(to_record(line, NOW)) for line in lines]
