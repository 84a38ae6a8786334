"""portsentinel.common.systemd's JournalWriter against the private journald: each record is one entry whose fields
are the record's, byte for byte, with journald's trusted fields added by journald itself."""

from __future__ import annotations

import os

from portsentinel import record as R
from portsentinel.common.systemd import JournalWriter, journal_available
from tests.journal import entries, new_tag


def test_a_record_is_one_entry_with_its_own_fields(journald: str) -> None:
    tag = new_tag()
    rec = R.validate({R.F_MESSAGE: "attackalert: SYN scan from host: 2001:db8::7/2001:db8::7 to TCP port: 22",
                      R.F_IDENT: R.DETECTOR_IDENTIFIER, R.F_MSGID: R.MESSAGE_IDS[R.Event.SCAN],
                      R.F_PRIORITY: str(R.PRIORITY_WARNING), R.F_EVENT: "scan", R.F_SRC: "2001:db8::7",
                      R.F_PORT: "22", R.F_PROTO: "tcp", R.F_SCAN: "syn", R.F_TIME: "1700000000.250000",
                      R.F_DETAIL: "two lines\nand é ☃", "PS_TEST": tag})
    assert journal_available(journald)
    w = JournalWriter()
    w.write(rec)
    w.flush()
    (entry,) = entries(tag, 1)
    assert {k: entry[k] for k in rec.fields} == dict(rec.fields)  # newline and non-ASCII kept exactly
    assert entry["_UID"] == str(os.getuid()) and entry["_PID"] == str(os.getpid())  # journald's own, not ours


def test_every_write_is_its_own_entry(journald: str) -> None:
    tag = new_tag()
    w = JournalWriter()
    for n in range(5):
        w.write(R.validate({R.F_MESSAGE: f"m{n}", R.F_EVENT: "summary", "PS_TEST": tag, "PS_SEQ": str(n)}))
    got = entries(tag, 5)
    assert sorted(int(e["PS_SEQ"]) for e in got) == [0, 1, 2, 3, 4]
