"""portsentinel.record_screen: the bulk screen never passes a line the per-line check refuses or changes."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable

from hypothesis import given, settings
from hypothesis import strategies as st

from portsentinel import record as R
from portsentinel.record_screen import screen_json_lines


def fleet_line(i: int) -> dict[str, str]:
    return {"SYSLOG_IDENTIFIER": "portsentinel-fleet", "PS_EVENT": "ban", "MESSAGE": f"fleet: 100.64.0.{i} banned",
            "PS_SRC": f"100.64.{i // 256}.{i % 256}", "PS_ORIGIN": "host-a", "PS_ORIGIN_JAIL": "portsentinel",
            "PS_UNTIL": "1764500000.500", "PS_SCAN": "syn", "PS_VERIFIED": "0", "PS_OFFENCE": "1", "PS_ORIGINS": "1",
            "PS_PORT": str(i % 70000)}


def per_line(line: str) -> dict[str, str] | str:
    try:
        return R.json_line_fields(line)
    except (R.RecordError, ValueError, RecursionError) as exc:
        return f"refused: {exc}"


def test_good_lines_pass_as_parsed() -> None:
    lines = [json.dumps(fleet_line(i)) for i in range(300)]
    got = screen_json_lines(lines)
    for line, fields in zip(lines, got, strict=True):
        want = per_line(line)
        if fields is None:  # (a port above 65535: the long way refuses it)
            assert isinstance(want, str) or want != json.loads(line)
        else:
            assert fields == want


def test_uncertain_lines_go_the_long_way() -> None:
    good = fleet_line(1)
    cases = [
        {**good, "PS_SRC": "100.064.0.1"},  # not canonical: the long way refuses it
        {**good, "PS_SRC": "::ffff:1.2.3.4"},  # canonical form differs: the long way changes it
        {**good, "PS_SRC": "1.2.3.4\n5.6.7.8"},  # two lines in one value
        {**good, "PS_PORT": "00"},
        {**good, "PS_PORT": "65536"},
        {**good, "PS_ORIGINS": 3},  # an integer: converted by the long way
        {**good, "PS_EVENT": "bann"},
        {**good, "ps_src": "1.2.3.4"},
        {**good, "_UID": "0"},
        {k: v for k, v in good.items() if k != "MESSAGE"},
        {**good, "MESSAGE": "x" * 5000},
    ]
    lines = [json.dumps(c) for c in cases] + [" " + json.dumps(good), json.dumps(good) + " ", "[1]", "{", "nope",
                                              json.dumps(good) + json.dumps(good)]
    got = screen_json_lines(lines + [json.dumps(good)])
    assert got[:-1] == [None] * len(lines)
    assert got[-1] == good


_names = st.sampled_from(["MESSAGE", "PS_SRC", "PS_DST", "PS_PORT", "PS_HITS", "PS_EVENT", "PS_SCAN", "PS_VERIFIED",
                          "PS_SRC_NET", "PS_ORIGINS", "PS_NOTE", "ps_x", "_UID", "PS_FLEET", "PRIORITY"])
_values = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["0", "00", "1", "-1", "65535", "65536", "+5", "5_0", " 7", "999999999", "1000000000",
                     "1.2.3.4", "01.2.3.4", "255.255.255.255", "256.1.1.1", "::1", "::FFFF:1.2.3.4", "2001:db8::",
                     "2001:db8::/64", "2001:db8::1/64", "10.0.0.0/8", "ban", "scan", "syn", "1\n2", "1.2.3.4\n"]),
    st.integers(-3, 70000), st.booleans(), st.none(), st.floats(allow_nan=True))


@settings(max_examples=400, deadline=None)
@given(recs=st.lists(st.dictionaries(_names, _values, max_size=8), min_size=1, max_size=6),
       message=st.booleans())
def test_screen_never_weaker(recs: list[dict[str, object]], message: bool) -> None:
    lines = [json.dumps({"MESSAGE": "m", **r} if message else r) for r in recs]
    for line, fields in zip(lines, screen_json_lines(lines), strict=True):
        if fields is not None:
            assert per_line(line) == fields


@settings(max_examples=200, deadline=None)
@given(texts=st.lists(st.text(max_size=40), min_size=1, max_size=5))
def test_screen_arbitrary_text(texts: list[str]) -> None:
    for line, fields in zip(texts, screen_json_lines(texts), strict=True):
        if fields is not None:
            assert per_line(line) == fields


_v6_ints = st.one_of(st.integers(0, 2**128 - 1), st.builds(
    lambda groups: sum(g << (112 - 16 * i) for i, g in enumerate(groups)),
    st.lists(st.sampled_from([0, 0, 0, 1, 0xFFFF, 0xDB8, 0x2001]), min_size=8, max_size=8)))


@settings(max_examples=1500, deadline=None)
@given(value=_v6_ints, plen=st.integers(0, 128), upper=st.booleans())
def test_canonical_fast_paths_agree_with_ipaddress(value: int, plen: int, upper: bool) -> None:
    """portsentinel.addrtext's answers are ipaddress's: canonical text passes as it is, every other spelling of
    the same address (expanded, leading zeros, upper case) is not taken for canonical."""
    import ipaddress

    from portsentinel.addrtext import network_canonical, v6_canonical

    addr = ipaddress.IPv6Address(value)
    canonical = str(addr)
    # certain for every address but the IPv4-mapped ones (never) and ::/96 (the C library prints those as
    # IPv4-compatible, "::1.2.3.4": not certain, the ipaddress way then)
    got = v6_canonical(canonical)
    assert got == (None if addr.ipv4_mapped is not None else value) or (got is None and value >> 32 == 0)
    for other in (addr.exploded, canonical.upper() if upper else canonical.replace("::", ":0::", 1)):
        if other != canonical:
            assert v6_canonical(other) is None
    net = ipaddress.IPv6Network((value & ~((1 << (128 - plen)) - 1), plen))
    text = str(net)
    base = int(net.network_address)
    assert network_canonical(text) == (plen < 128 and net.network_address.ipv4_mapped is None) or (
        base >> 32 == 0 and not network_canonical(text))
    expanded = f"{net.network_address.exploded}/{plen}"  # (the ipaddress way)
    assert _outcome(R.canonical_network, text) == _outcome(R.canonical_network, expanded)
    if value & ((1 << (128 - plen)) - 1):
        assert not network_canonical(f"{canonical}/{plen}")


def _outcome(fn: Callable[[str], str], text: str) -> str:
    try:
        return fn(text)
    except ValueError as exc:
        return f"ValueError: {type(exc).__name__}"


def test_other_spellings_are_never_taken_for_canonical() -> None:
    from portsentinel.addrtext import v6_canonical

    for text in ("1::2:3:4:5:6:7", "1:0:0:2:0:0:0:0", "1::2:0:0:0:0", "2001:0db8::", "2001:DB8::", "::ffff:1.2.3.4",
                 "2001:db8::/64", "fe80::1%eth0", "1:2:3:4:5:6:7:8:9", "", ":::"):
        assert v6_canonical(text) is None, text
    for text in ("1:0:2:3:4:5:6:7", "1:0:0:2::", "2001:db8:0:0:1::"):  # (the longest run of zeros is "::")
        assert v6_canonical(text) == int(ipaddress.IPv6Address(text)), text
    assert v6_canonical("2001:db8::1:0:0:1") == int(ipaddress.IPv6Address("2001:db8::1:0:0:1"))


def test_v4_mapped_networks_keep_their_old_answer() -> None:
    assert _outcome(R.canonical_network, "::ffff:0:0/96") == _outcome(R.canonical_network, "0::ffff:0:0/96")
    assert R.canonical_address("::ffff:102:304") == "1.2.3.4"
