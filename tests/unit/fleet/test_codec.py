"""portsentinel.fleet.keys and .codec: the bucket's keys and values, round trips and garbage refused."""

from __future__ import annotations

import ipaddress
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from portsentinel.fleet import codec as C
from portsentinel.fleet.keys import BadKey, Key, decode_addr, encode_addr, make_key, parse_key

NOW = 1_764_490_000.0
MAXTIME = 30 * 86400.0


@pytest.mark.parametrize(("addr", "token"), [
    ("203.0.113.7", "203-0-113-7"),
    ("2001:db8::7", "2001_db8__7"),
    ("2001:db8::/64", "2001_db8__=64"),
    ("10.0.0.0/8", "10-0-0-0=8"),
    ("::", "__"),
])
def test_addr_tokens(addr: str, token: str) -> None:
    assert encode_addr(addr) == token
    assert decode_addr(token) == addr


@pytest.mark.parametrize("token", ["203-0-113-07", "10-0-0-1=8", "2001_DB8__7", "2001_0db8__7", "1-2-3-4=32",
                                   "_ffff_1-2-3-4", "__ffff_102_304", "1-2-3", "", "a.b", "1-2-3-4%eth0",
                                   "2001_db8__=129", "1-2-3-4=08"])
def test_non_canonical_tokens_refused(token: str) -> None:
    with pytest.raises(ValueError):
        decode_addr(token)


def test_keys() -> None:
    assert make_key("host-a", "portsentinel", "203.0.113.7") == "host-a.portsentinel.203-0-113-7"
    assert parse_key("host-a._unban.2001_db8__=64") == Key("host-a", "_unban", "2001:db8::/64")
    assert parse_key("host-a._unban.2001_db8__=64").unban
    for bad in ("host-a.portsentinel", "a.b.c.d", "h*st.j.1-2-3-4", "h.j.1-2-3-4.x", "." * 2,
                "h." + "j" * 65 + ".1-2-3-4"):
        with pytest.raises(BadKey):
            parse_key(bad)
    with pytest.raises(ValueError):
        make_key("bad host", "j", "1.2.3.4")
    with pytest.raises(ValueError):
        make_key("h", "j", "01.2.3.4")


_names = st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True)
_v4 = st.ip_addresses(v=4).map(str)


def _unmapped(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is None


_v6 = st.ip_addresses(v=6).filter(_unmapped).map(str)
_nets = st.builds(lambda a, p: str(ipaddress.ip_network(f"{a}/{p}", strict=False)),
                  st.ip_addresses(v=6).filter(_unmapped), st.integers(1, 127))


@given(_names, _names, st.one_of(_v4, _v6, _nets))
def test_key_round_trip(host: str, jail: str, addr: str) -> None:
    assert parse_key(make_key(host, jail, addr)) == Key(host, jail, addr)


@given(st.text(max_size=80))
def test_garbage_keys_never_parse_to_a_non_canonical_key(text: str) -> None:
    try:
        key = parse_key(text)
    except BadKey:
        return
    assert key.text() == text  # whatever parses is exactly the encoding of what it names


def ban(**over: object) -> dict[str, object]:
    base: dict[str, object] = {"v": 1, "addr": "203.0.113.7", "jail": "portsentinel", "until": NOW + 3600,
                               "scan": "syn", "verified": 0, "offence": 2, "at": NOW - 1}
    base.update(over)
    return base


KEY = Key("host-a", "portsentinel", "203.0.113.7")


def dec(obj: object, key: Key = KEY) -> C.Ban:
    return C.decode_ban(json.dumps(obj).encode(), key, NOW, MAXTIME)


def test_ban_round_trip_and_size() -> None:
    value = C.Ban("2001:db8:1:2::/64", "j" * 64, NOW + 10.25, "xmas", 1, C.MAX_OFFENCE, NOW)
    data = C.encode_ban(value)
    assert len(data) <= C.MAX_BYTES and b" " not in data
    assert C.decode_ban(data, Key("h", "j" * 64, "2001:db8:1:2::/64"), NOW, MAXTIME) == value


@pytest.mark.parametrize(("over", "reason"), [
    ({"addr": "203.0.113.8"}, "key's address"),
    ({"addr": "203.000.113.7"}, "key's address"),
    ({"jail": "other"}, "key's jail"),
    ({"until": NOW + MAXTIME + 10}, "maxtime"),
    ({"until": True}, "not a finite"),
    ({"until": "1"}, "not a finite"),
    ({"until": -5}, "not a finite"),
    ({"until": 10**320}, "not a finite"),  # beyond a float: refused, not an OverflowError (a crash of the watch)
    ({"at": 10**320}, "not a finite"),
    ({"scan": "bogus"}, "scan kind"),
    ({"verified": True}, "0 or 1"),
    ({"verified": 2}, "0 or 1"),
    ({"offence": 0}, "offence"),
    ({"offence": 1.5}, "offence"),
    ({"at": NOW + 3600}, "future"),
    ({"v": 2}, "version"),
    ({"v": True}, "version"),
    ({"extra": 1}, "unknown field"),
])
def test_bad_bans_refused(over: dict[str, object], reason: str) -> None:
    assert len(json.dumps(ban(**over))) <= C.MAX_BYTES  # refused for its field, not its size
    with pytest.raises(C.BadValue, match=reason):
        dec(ban(**over))


def test_missing_duplicate_nan_and_size() -> None:
    obj = ban()
    del obj["offence"]
    with pytest.raises(C.BadValue, match="missing"):
        dec(obj)
    with pytest.raises(C.BadValue, match="twice"):
        C.decode_ban(b'{"v":1,"v":1}', KEY, NOW, MAXTIME)
    with pytest.raises(C.BadValue, match="not a number"):
        C.decode_ban(json.dumps(ban()).replace(str(NOW - 1), "NaN").encode(), KEY, NOW, MAXTIME)
    with pytest.raises(C.BadValue, match="over 512"):
        C.decode_ban(b" " * 513, KEY, NOW, MAXTIME)
    with pytest.raises(C.BadValue, match="UTF-8"):
        C.decode_ban(b"\xff", KEY, NOW, MAXTIME)
    with pytest.raises(C.BadValue, match="object"):
        C.decode_ban(b"[1]", KEY, NOW, MAXTIME)


def test_expired_is_its_own_reason() -> None:
    with pytest.raises(C.Expired):
        dec(ban(until=NOW - 1))


def test_unban_marker() -> None:
    key = Key("host-b", "_unban", "203.0.113.7")
    value = C.Unban("203.0.113.7", NOW, NOW + 600)
    assert C.decode_unban(C.encode_unban(value), key, NOW, MAXTIME) == value
    with pytest.raises(C.BadValue, match="unknown field"):
        C.decode_unban(C.encode_ban(C.Ban("203.0.113.7", "_unban", NOW + 60, at=NOW)), key, NOW, MAXTIME)


@given(st.binary(max_size=600))
def test_garbage_bytes_never_accepted(data: bytes) -> None:
    with pytest.raises(C.BadValue):
        C.decode_ban(data, KEY, NOW, MAXTIME)


@given(st.dictionaries(st.sampled_from(["v", "addr", "jail", "until", "scan", "verified", "offence", "at", "x"]),
                       st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20)),
                       max_size=9))
def test_random_objects_never_accepted_unless_valid(obj: dict[str, object]) -> None:
    try:
        value = C.decode_ban(json.dumps(obj).encode(), KEY, NOW, MAXTIME)
    except C.BadValue:
        return
    assert value.addr == KEY.addr and value.jail == KEY.jail and NOW < value.until <= NOW + MAXTIME
