"""portsentinel.record: the shared record schema — validation, canonical addresses, JSON lines, hostile names."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from portsentinel import record as R


def base(**extra: object) -> dict[str, object]:
    fields: dict[str, object] = {
        "MESSAGE": "attackalert: TCP SYN/Normal scan from host: 198.51.100.7/198.51.100.7 to TCP port: 143",
        "MESSAGE_ID": R.MESSAGE_IDS[R.Event.SCAN],
        "PRIORITY": 4,
        "SYSLOG_IDENTIFIER": R.DETECTOR_IDENTIFIER,
        "PS_EVENT": "scan",
        "PS_SRC": "198.51.100.7",
        "PS_DST": "203.0.113.1",
        "PS_PROTO": "tcp",
        "PS_PORT": "143",
        "PS_SCAN": "syn",
        "PS_MODE": "stcp",
        "PS_VERIFIED": "0",
        "PS_HITS": 12,
        "PS_PORTS": "9",
        "PS_WINDOW": "60",
    }
    fields.update(extra)
    return fields


def test_valid_record_becomes_strings() -> None:
    rec = R.validate(base())
    assert all(isinstance(v, str) for v in rec.fields.values())
    assert rec.get("PRIORITY") == "4" and rec.get("PS_HITS") == "12"
    assert rec.event == "scan" and rec.src == "198.51.100.7"
    assert rec.get("PS_NOPE", "dflt") == "dflt"


def test_message_ids_are_distinct_128_bit() -> None:
    assert set(R.MESSAGE_IDS) == set(R.Event)
    ids = list(R.MESSAGE_IDS.values())
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)


@pytest.mark.parametrize("name", ["ps_src", "PS-SRC", "1PS", "PS SRC", "", "P" * 65, "PS_SRC\n"])
def test_bad_field_names(name: str) -> None:
    with pytest.raises(R.RecordError) as err:
        R.validate(base(**{name: "x"}))
    assert err.value.field == name
    assert name in str(err.value) or not name


@pytest.mark.parametrize("name", ["PSÉ", "PS_²", "PS_\u0663"])
def test_non_ascii_field_names(name: str) -> None:
    with pytest.raises(R.RecordError):
        R.validate(base(**{name: "x"}))


def test_non_string_field_name() -> None:
    fields = base()
    fields[5] = "x"  # type: ignore[index]
    with pytest.raises(R.RecordError, match="not a string"):
        R.validate(fields)


@pytest.mark.parametrize("field,value", [
    ("PS_SRC", "not-an-ip"), ("PS_SRC", "198.51.100.300"), ("PS_SRC", ""), ("PS_DST", "10.0.0.0/8"),
    ("PS_PORT", "65536"), ("PS_PORT", "-1"), ("PS_PORT", "80x"), ("PS_PORT", "1e3"),
    ("PS_HITS", "many"), ("PS_HITS", "-2"), ("PRIORITY", "warning"), ("PS_WINDOW", "1.5"),
    ("PS_EVENT", "explode"), ("PS_SCAN", "SYN"), ("PS_SCAN", "window"), ("PS_MODE", "tcp6"),
    ("PS_PROTO", "icmp"), ("PS_VERIFIED", "yes"), ("PS_VERIFIED", "2"),
    ("PS_HITS", True), ("PS_DETAIL", 1.5), ("PS_DETAIL", None), ("PS_DETAIL", ["a"]),
    ("MESSAGE", "x" * 4097),
])
def test_bad_values_name_the_field(field: str, value: object) -> None:
    with pytest.raises(R.RecordError) as err:
        R.validate(base(**{field: value}))
    assert err.value.field == field
    assert str(err.value).startswith(f"{field}: ")


def test_message_is_required() -> None:
    fields = base()
    del fields["MESSAGE"]
    with pytest.raises(R.RecordError) as err:
        R.validate(fields)
    assert err.value.field == "MESSAGE"


def test_too_many_fields() -> None:
    with pytest.raises(R.RecordError):
        R.validate(base(**{f"PS_X{i}": "1" for i in range(60)}))


def test_trusted_fields() -> None:
    with pytest.raises(R.RecordError) as err:
        R.validate(base(_UID="0"))
    assert err.value.field == "_UID"
    rec = R.validate(base(_UID="0", _SYSTEMD_UNIT="portsentinel-detector.service"), allow_trusted=True)
    assert rec.get(R.TRUSTED_UID) == "0"
    with pytest.raises(R.RecordError):
        R.validate(base(_bad="0"), allow_trusted=True)


def test_unknown_ps_fields_are_kept() -> None:
    assert R.validate(base(PS_FUTURE="whatever")).get("PS_FUTURE") == "whatever"


@pytest.mark.parametrize("text,canon", [
    ("198.51.100.7", "198.51.100.7"),
    ("::ffff:198.51.100.7", "198.51.100.7"),
    ("::FFFF:C633:6407", "198.51.100.7"),
    ("2001:DB8:0:0::7", "2001:db8::7"),
    ("2001:0db8:0000:0000:0000:0000:0000:0007", "2001:db8::7"),
    ("::1", "::1"),
])
def test_addresses_are_canonicalised(text: str, canon: str) -> None:
    assert R.canonical_address(text) == canon
    rec = R.validate(base(PS_SRC=text, PS_DST=text))
    assert rec.src == canon and rec.get("PS_DST") == canon


def test_integers_are_normalised() -> None:
    rec = R.validate(base(PS_PORT="0143", PS_HITS="+7", PS_STATUS=-1))
    assert (rec.get("PS_PORT"), rec.get("PS_HITS"), rec.get("PS_STATUS")) == ("143", "7", "-1")


def test_json_round_trip() -> None:
    rec = R.validate(base(PS_DETAIL='quote " backslash \\ tab \t é ✓', PS_SRC="2001:db8::7"))
    line = R.to_json_line(rec)
    assert line.endswith("\n") and line.count("\n") == 1 and line.isascii()
    assert R.from_json_line(line) == rec
    assert list(json.loads(line)) == sorted(rec.fields)
    assert R.to_journal_fields(rec) == dict(rec.fields)


@pytest.mark.parametrize("line,field", [
    ("not json", "*"), ("[1, 2]", "*"), ('"text"', "*"),
    ('{"MESSAGE": "m", "PS_SRC": "nope"}', "PS_SRC"),
    ('{"PS_EVENT": "scan"}', "MESSAGE"),
    ('{"MESSAGE": "m", "PS_PORT": 99999}', "PS_PORT"),
    ('{"MESSAGE": "m", "PS_HITS": {"a": 1}}', "PS_HITS"),
])
def test_bad_json_lines(line: str, field: str) -> None:
    with pytest.raises(R.RecordError) as err:
        R.from_json_line(line)
    assert err.value.field == field


@given(st.dictionaries(st.from_regex(r"\APS_[A-Z0-9_]{1,20}\Z"), st.text(max_size=50), max_size=10),
       st.text(min_size=1, max_size=80))
def test_round_trip_any_free_text(extra: dict[str, str], message: str) -> None:
    known = set(R.INT_FIELDS | R.ADDR_FIELDS | {R.F_EVENT, R.F_SCAN, R.F_MODE, R.F_PROTO, R.F_VERIFIED})
    fields = {k: v for k, v in extra.items() if k not in known}
    rec = R.validate({"MESSAGE": message, **fields})
    assert R.from_json_line(R.to_json_line(rec)) == rec


@pytest.mark.parametrize("name", ["scanner.example.org", "host-1.example", "a", "xn--bcher-kva.example",
                                  "a" * 253])
def test_safe_hostnames(name: str) -> None:
    assert R.safe_hostname(name)


@pytest.mark.parametrize("name", ["", "1.2.3.4", "::1", "2001:db8::1", "1.2.3", "123", "10.0.0.1.", "a;b",
                                  "$(x)", "`id`", "a b", "a\nb", "a..b", "a/b", "a_b", "é.example", "x" * 300,
                                  "a" * 254, "host:80", "*.example"])
def test_hostile_hostnames(name: str) -> None:
    assert not R.safe_hostname(name)


def test_alert_message_wording() -> None:
    msg = R.alert_message("maimon", "198.51.100.7", "tcp", 80)
    assert msg == "attackalert: TCP Maimon (FIN/ACK) scan from host: 198.51.100.7/198.51.100.7 to TCP port: 80"
    assert R.alert_message("udp", "2001:db8::7", "udp", 69) == \
        "attackalert: UDP scan from host: 2001:db8::7/2001:db8::7 to UDP port: 69"
    assert R.alert_message("syn", "198.51.100.7", "tcp", 1, "a;rm -rf") == \
        "attackalert: TCP SYN/Normal scan from host: 198.51.100.7/198.51.100.7 to TCP port: 1"
    assert "Unknown Type" in R.alert_message("bogus", "198.51.100.7", "tcp", 1)


@pytest.mark.parametrize("text", ["01.2.3.4", "256.1.1.1", "1.2.3", "\u0661.2.3.4", "1.2.3.4.5", "1.2.3.-4"])
def test_canonical_address_refuses_non_canonical_quads(text: str) -> None:
    with pytest.raises(ValueError):
        R.canonical_address(text)


HOSTILE_ADDRESSES = [
    "fe80::1%x]\nALL: ALL\n#",  # a zone id carrying a hosts.deny line
    "fe80::1%eth0", "fe80::1%1", "::1%lo",  # zone ids: not part of a ban address
    " 198.51.100.7\n", "198.51.100.7\n", "\t::1", "198.51.100.7\x00", "198.51.100.7\r\nALL: ALL",
    "[2001:db8::7]", "2001:db8::7]", "198.51.100.7/32 ", "198.51.100.7 ALL", "", "\x1b[31m1.2.3.4",
    "::ffff:127.0.0.1%eth0", "1.2.3.4:80", "0x7f.1", "2001:db8::7\u200b",
]


@pytest.mark.parametrize("text", HOSTILE_ADDRESSES)
def test_canonical_address_refuses_anything_but_a_plain_address(text: str) -> None:
    with pytest.raises(ValueError):
        R.canonical_address(text)
    with pytest.raises(R.RecordError, match="PS_SRC"):
        R.validate(base(PS_SRC=text))


@pytest.mark.parametrize("text,canon", [("::ffff:127.0.0.1", "127.0.0.1"), ("::FFFF:7F00:1", "127.0.0.1"),
                                        ("0:0:0:0:0:ffff:a00:1", "10.0.0.1")])
def test_mapped_addresses_become_ipv4_before_any_check(text: str, canon: str) -> None:
    assert R.canonical_address(text) == canon


def test_canonical_address_fast_path_agrees_with_ipaddress() -> None:
    import ipaddress

    for i in range(0, 2**32, 2**32 // 5000 + 7):
        text = str(ipaddress.IPv4Address(i))
        assert R.canonical_address(text) == text


def test_record_time_prefers_the_decision_or_the_journal() -> None:
    both = {"PS_TIME": "100.5", "__REALTIME_TIMESTAMP": "200000000"}
    assert R.record_time(both) == 100.5  # the detector's decision (reports, the latency histogram)
    assert R.record_time(both, journal_first=True) == 200.0  # a filter dates an entry by the journal
    assert R.record_time({"PS_TIME": "x", "__REALTIME_TIMESTAMP": "3000000"}) == 3.0
    assert R.record_time({}) is None
