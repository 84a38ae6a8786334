"""portsentinel.fleet.publish: which responder decisions become a put or a delete, and with what value."""

from __future__ import annotations

import json

from portsentinel import record as R
from portsentinel.fleet.publish import from_decision

NOW = 1_764_490_000.0
MAX = 86400.0


def decision(**over: str) -> dict[str, str]:
    base = {R.F_IDENT: R.RESPONDER_IDENTIFIER, R.F_EVENT: "ban", R.F_SHARE: "1", R.F_JAIL: "portsentinel",
            R.F_SRC: "203.0.113.7", R.F_BANTIME: "3600", R.F_TIME: str(NOW - 1), R.F_SCAN: "syn"}
    base.update(over)
    return base


def test_shared_ban_becomes_a_put() -> None:
    op = from_decision(decision(), "a", NOW, MAX)
    assert op is not None and op.key == "a.portsentinel.203-0-113-7" and op.value is not None
    value = json.loads(op.value)
    assert value == {"v": 1, "addr": "203.0.113.7", "jail": "portsentinel", "until": NOW + 3599, "scan": "syn",
                     "verified": 0, "offence": 1, "at": NOW - 1}


def test_until_offence_verified_and_network() -> None:
    op = from_decision(decision(**{R.F_UNTIL: str(NOW + 50), R.F_OFFENCE: "3", R.F_VERIFIED: "1",
                                   R.F_SRC: "2001:db8:1:2::9", R.F_SRC_NET: "2001:db8:1:2::/64"}), "a", NOW, MAX)
    assert op is not None and op.key == "a.portsentinel.2001_db8_1_2__=64" and op.value is not None
    value = json.loads(op.value)
    assert (value["until"], value["offence"], value["verified"], value["addr"]) == (NOW + 50, 3, 1,
                                                                                   "2001:db8:1:2::/64")


def test_forever_is_bounded_and_past_is_dropped() -> None:
    op = from_decision(decision(**{R.F_BANTIME: "-1"}), "a", NOW, MAX)
    assert op is not None and op.value is not None and json.loads(op.value)["until"] == NOW + MAX
    assert from_decision(decision(**{R.F_BANTIME: "1", R.F_TIME: str(NOW - 5)}), "a", NOW, MAX) is None


def test_unban_becomes_a_delete() -> None:
    op = from_decision(decision(**{R.F_EVENT: "unban"}), "a", NOW, MAX)
    assert op is not None and op.value is None and op.key == "a.portsentinel.203-0-113-7"


def test_not_shared_or_not_the_responder_or_bad() -> None:
    assert from_decision(decision(**{R.F_SHARE: "0"}), "a", NOW, MAX) is None
    assert from_decision(decision(**{R.F_IDENT: "sshd"}), "a", NOW, MAX) is None
    assert from_decision(decision(**{R.F_EVENT: "ignored"}), "a", NOW, MAX) is None
    assert from_decision(decision(**{R.F_SRC: "1.2.3.04"}), "a", NOW, MAX) is None
    assert from_decision(decision(**{R.F_JAIL: "bad jail"}), "a", NOW, MAX) is None
    assert from_decision(decision(**{R.F_BANTIME: "soon"}), "a", NOW, MAX) is None


def test_fleet_wide_unban_becomes_a_marker() -> None:
    record = decision(**{R.F_EVENT: "unban", "PS_FLEET": "1"})
    del record[R.F_JAIL]
    op = from_decision(record, "a", NOW, MAX)
    assert op is not None and op.key == "a._unban.203-0-113-7" and op.value is not None
    assert json.loads(op.value) == {"v": 1, "addr": "203.0.113.7", "at": NOW, "until": NOW + MAX}
    assert from_decision({**record, R.F_EVENT: "ban"}, "a", NOW, MAX) is None  # a fleet-wide "ban": nothing
    assert from_decision(decision(**{R.F_JAIL: "_unban", R.F_EVENT: "unban"}), "a", NOW, MAX) is None


def test_carried_decisions_are_json_lines_of_text_fields() -> None:
    from portsentinel.common.wake import PAYLOAD_MAX, records_payload
    from portsentinel.fleet.publish import CARRIED_MAX, carried

    recs = [decision(), decision(**{R.F_SRC: "203.0.113.8", R.F_EVENT: "unban"})]
    assert carried(records_payload(recs)) == recs
    junk = b'not json\n[1, 2]\n{"PS_SRC": {"x": 1}, "PS_EVENT": "ban", "PS_OFFENCE": 3, "PS_X": true}\n\n'
    assert carried(junk) == [{"PS_EVENT": "ban", "PS_OFFENCE": "3"}]  # an object's other fields are dropped
    assert len(carried(b"{}\n" * (CARRIED_MAX + 10))) == CARRIED_MAX
    big = [decision(**{R.F_MESSAGE: "x" * 1000}) for _ in range(PAYLOAD_MAX // 1000)]
    assert records_payload(big) == b""  # too many for one datagram: an empty wake-up, the journal has them


def test_early_publication_is_not_repeated_by_the_journals_copy() -> None:
    from portsentinel.fleet.publish import Early

    early = Early(limit=3)
    early.note("a.j.1", 10.0)
    assert early.seen("a.j.1", 10.0) and early.seen("a.j.1", 9.0)  # the same decision, or an older one read late
    assert not early.seen("a.j.2", 10.0) and not early.seen("a.j.1", None)
    assert not early.seen("a.j.1", 11.0)  # a newer decision on the key: published, the key forgotten
    assert not early.seen("a.j.1", 10.0)
    for i in range(5):
        early.note(f"a.j.{i}", 1.0)
    assert len(early) == 3 and not early.seen("a.j.0", 1.0) and early.seen("a.j.4", 1.0)
