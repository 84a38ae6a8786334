"""Forged records: the trusted _UID pushed down into the journal match, and forgeries reported in aggregate."""

from __future__ import annotations

import pytest

from portsentinel.responder.adapters.journal_source import _check_matches
from portsentinel.responder.config.jailconf import JailConfig
from portsentinel.responder.core.forgery import OTHER, ForgeryTally, writer_of
from portsentinel.responder.core.trust import pushed_down


def _jail(uids: tuple[int, ...]) -> JailConfig:
    return JailConfig(name="j", where="x", enabled=True, filter="f", trusted_uids=uids)


def test_trusted_uids_are_added_to_every_match_group() -> None:
    groups = pushed_down([{"_SYSTEMD_UNIT": "ssh.service"}, {"_COMM": "sshd"}], _jail((0,)))
    assert groups == [{"_SYSTEMD_UNIT": "ssh.service", "_UID": ("0",)}, {"_COMM": "sshd", "_UID": ("0",)}]
    # Several trusted users: one term each, which sd-journal ORs inside the group.
    assert _check_matches(pushed_down([{"PS_EVENT": "scan"}], _jail((0, 105)))) == [
        ["PS_EVENT=scan", "_UID=0", "_UID=105"]]


def test_a_jail_without_journalmatch_still_reads_only_its_trusted_writers() -> None:
    assert pushed_down([], _jail((0,))) == [{"_UID": ("0",)}]
    assert _check_matches(pushed_down([], _jail((0,)))) == [["_UID=0"]]


def test_no_trusted_uid_or_an_explicit_uid_term_is_left_alone() -> None:
    assert pushed_down([{"_COMM": "sshd"}], _jail(())) == [{"_COMM": "sshd"}]
    assert pushed_down([], _jail(())) == [{}]
    assert pushed_down([{"_UID": "7"}], _jail((0,))) == [{"_UID": "7"}]


def test_a_match_value_with_a_newline_is_refused_in_a_tuple_too() -> None:
    with pytest.raises(ValueError, match="newline"):
        _check_matches([{"_UID": ("0", "1\nX=y")}])


def test_writer_is_described_by_trusted_fields_only_and_bounded() -> None:
    fields = {"_UID": "65534", "_COMM": "python3", "PS_SRC": "1.2.3.4", "_SYSTEMD_UNIT": "x" * 500}
    assert writer_of(fields, "fb") == f"_UID=65534 _SYSTEMD_UNIT={'x' * 64} _COMM=python3"
    assert writer_of({"PS_SRC": "1.2.3.4"}, "jail j: untrusted file") == "jail j: untrusted file"


def test_a_flood_is_one_record_at_once_then_one_per_interval() -> None:
    t = ForgeryTally(interval=60)
    first = t.add("_UID=65534", "j", "198.51.100.1", "not trusted", 1000.0)
    assert first is not None and first.first and first.count == 1 and first.ip == "198.51.100.1"
    assert all(t.add("_UID=65534", "j", f"198.51.100.{i % 250}", "r", 1000.0 + i / 1000) is None
               for i in range(4999))
    assert t.total == 5000 and t.next_due() == 1060.0
    assert t.due(1059.0) == []
    (agg,) = t.due(1060.0)
    assert (agg.count, agg.writer, agg.first) == (4999, "_UID=65534", False)
    assert t.due(1120.0) == []  # nothing more: the writer is forgotten…
    again = t.add("_UID=65534", "j", "198.51.100.2", "r", 1130.0)
    assert again is not None and again.first  # …and its next forgery is reported at once


def test_writers_are_counted_apart_and_the_table_is_bounded() -> None:
    t = ForgeryTally(interval=10, max_writers=3)
    firsts = [t.add(f"_UID={u}", "j", "192.0.2.1", "r", 0.0) for u in range(10)]
    # Three writers, then every new one under OTHER (reported once, then counted).
    assert [r.writer for r in firsts if r is not None] == ["_UID=0", "_UID=1", "_UID=2", OTHER]
    assert t.add("_UID=1", "j", "192.0.2.1", "r", 1.0) is None
    assert t.add("_UID=99", "j", "192.0.2.1", "r", 1.0) is None
    assert {r.writer: r.count for r in t.flush(2.0)} == {"_UID=1": 1, OTHER: 7}
    assert t.total == 12 and t.next_due() is None
