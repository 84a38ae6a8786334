"""portsentinel.common.values: one grammar each for durations, booleans, ports and networks."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from portsentinel.common import values


@pytest.mark.parametrize(("text", "seconds"), [
    ("60", 60.0), ("1m", 60.0), ("1.5h", 5400.0), ("1d", 86400.0), ("2w", 1209600.0), (" 10 M ", 600.0),
    ("0.5s", 0.5),
])
def test_duration(text: str, seconds: float) -> None:
    assert values.duration(text) == seconds


@pytest.mark.parametrize(("text", "reason"), [
    ("", "not a duration"), ("1y", "not a duration"), ("-5", "negative"), ("0", "above zero"),
    ("1e3", "not a duration"), ("nan", "not a duration"), ("-1", "negative"),
])
def test_bad_duration(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        values.duration(text)


def test_duration_zero_and_forever_only_when_asked() -> None:
    assert values.duration("0", zero=True) == 0.0
    assert values.duration("-1", forever=True) == values.FOREVER
    with pytest.raises(ValueError, match="only -1"):
        values.duration("-2", forever=True)


@given(st.text(max_size=20))
def test_duration_never_raises_anything_but_valueerror(text: str) -> None:
    try:
        seconds = values.duration(text, zero=True, forever=True)
    except ValueError:
        return
    assert seconds == values.FOREVER or 0 <= seconds < 1e18


@pytest.mark.parametrize(("text", "value"), [
    ("yes", True), ("TRUE", True), ("on", True), ("1", True), ("enabled", True),
    ("no", False), ("False", False), ("off", False), ("0", False), ("disabled", False),
])
def test_boolean(text: str, value: bool) -> None:
    assert values.boolean(text) is value


def test_boolean_empty_only_with_a_default() -> None:
    assert values.boolean("  ", empty=False) is False
    with pytest.raises(ValueError, match="not a boolean"):
        values.boolean("")
    with pytest.raises(ValueError, match="not a boolean"):
        values.boolean("maybe")


def test_ports() -> None:
    assert list(values.port_span("80")) == [80]
    assert list(values.port_span("1-3")) == [1, 2, 3]
    assert list(values.tokens(" 1, 2\t3 ,,4 ")) == ["1", "2", "3", "4"]
    for bad, reason in (("0", "1..65535"), ("65536", "1..65535"), ("x", "not a number"), ("5-1", "above"),
                        ("1-", "FIRST-LAST"), ("-1", "FIRST-LAST"), ("999999", "not a number")):
        with pytest.raises(ValueError, match=reason):
            values.port_span(bad)


def test_network() -> None:
    assert values.network("192.0.2.7") == ipaddress.ip_network("192.0.2.7/32")
    assert values.network("2001:db8::/32") == ipaddress.ip_network("2001:db8::/32")
    assert values.network("192.0.2.7/24", strict=False) == ipaddress.ip_network("192.0.2.0/24")
    with pytest.raises(ValueError, match="host bits"):
        values.network("192.0.2.7/24")
    with pytest.raises(ValueError, match="scoped"):
        values.network("fe80::1%eth0")
    with pytest.raises(ValueError, match="not an IPv4 or IPv6"):
        values.network("example.org")
