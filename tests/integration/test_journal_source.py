"""JournalSource and the wake socket against the private journald (scripts/with-journald.sh).

Every test tags its records with its own PS_TEST value, so tests sharing the session's journal do not see
each other's records.
"""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from systemd import journal

from portsentinel.common.wake import WakeSocket, send_wake
from portsentinel.responder.adapters.journal_source import JournalSource, JournalUnavailable, journal_readable
from portsentinel.responder.core.sources import Entry

ROOT = Path(__file__).resolve().parent.parent.parent
NOBODY = 65534


def tag() -> str:
    return uuid.uuid4().hex


def send(t: str, seq: int, **fields: str) -> None:
    journal.send(f"test record {seq}", PS_TEST=t, PS_SEQ=str(seq), **fields)


def stored(t: str, seq: int, timeout: float = 3.0) -> None:
    """Wait until journald has stored record ``seq`` of ``t`` (sending is asynchronous to storing)."""
    reader = journal.Reader()
    reader.add_match(PS_TEST=t, PS_SEQ=str(seq))
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            reader.seek_head()
            if reader.get_next():
                return
            reader.wait(0.02)
    finally:
        reader.close()
    raise AssertionError(f"record {seq} of {t} not stored within {timeout} s")


def collect(src: JournalSource, want: int, timeout: float = 3.0) -> list[Entry]:
    """Entries until ``want`` came or ``timeout`` passed: waits on the descriptor, reads at least every 50 ms."""
    out: list[Entry] = []
    deadline = time.monotonic() + timeout
    while len(out) < want and time.monotonic() < deadline:
        select.select([src], [], [], 0.05)
        src.process()
        out.extend(src.read())
    return out


def settle(src: JournalSource) -> list[Entry]:
    """What arrives within 300 ms (longer than journald's notification delay): for 'nothing more came'."""
    return collect(src, 10**6, timeout=0.3)


def seqs(entries: list[Entry]) -> list[int]:
    return [int(e.fields["PS_SEQ"]) for e in entries]


def test_matches_are_or_of_and_groups(journald: str) -> None:
    t = tag()
    src = JournalSource([{"PS_TEST": t, "PS_EVENT": "scan"}, {"PS_TEST": t, "SYSLOG_IDENTIFIER": "sshd"}])
    try:
        send(t, 1, PS_EVENT="scan")
        send(t, 2, PS_EVENT="summary")  # PS_TEST alone matches neither group
        send(t, 3, SYSLOG_IDENTIFIER="sshd")
        send(t, 4, PS_EVENT="scan", SYSLOG_IDENTIFIER="sshd")
        send(tag(), 5, PS_EVENT="scan")
        assert seqs(collect(src, 3)) == [1, 3, 4]
        assert settle(src) == []
    finally:
        src.close()


def test_no_matches_reads_everything_and_bad_matches_are_refused(journald: str) -> None:
    t = tag()
    src = JournalSource([])
    try:
        send(t, 1)
        entries = collect(src, 1)
        assert any(e.fields.get("PS_TEST") == t for e in entries)
    finally:
        src.close()
    with pytest.raises(ValueError):
        JournalSource([{"ps_test": "x"}])
    with pytest.raises(ValueError):
        JournalSource([{"PS_TEST": "a\nb"}])


def test_fields_are_journald_text_with_trusted_fields(journald: str) -> None:
    t = tag()
    src = JournalSource([{"PS_TEST": t}])
    try:
        send(t, 1, MESSAGE_ID="5f2a4c1e8b7d4e0a9c3b6d1f2e8a7b01", PRIORITY="4", PS_PORT="143")
        (e,) = collect(src, 1)
    finally:
        src.close()
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in e.fields.items())
    f = e.fields
    assert f["_UID"] == str(os.getuid()) and f["_GID"] == str(os.getgid()) and f["_PID"] == str(os.getpid())
    assert f["_TRANSPORT"] == "journal" and f["_BOOT_ID"] and f["_COMM"]
    assert f["MESSAGE_ID"] == "5f2a4c1e8b7d4e0a9c3b6d1f2e8a7b01" and f["PRIORITY"] == "4"
    assert f["PS_PORT"] == "143" and f["MESSAGE"] == "test record 1"
    assert f["__REALTIME_TIMESTAMP"].isdigit() and abs(int(f["__REALTIME_TIMESTAMP"]) / 1e6 - time.time()) < 60
    assert f["__MONOTONIC_TIMESTAMP"].isdigit()
    assert e.cursor and f["__CURSOR"] == e.cursor and e.cursor.startswith("s=")
    assert e.line == "" and e.error == "" and e.trusted is False  # trust is the engine's check
    if "_SYSTEMD_UNIT" in f:  # only where systemd runs
        assert f["_SYSTEMD_UNIT"]


def test_cursor_resume_exactly_once(journald: str) -> None:
    t = tag()
    src = JournalSource([{"PS_TEST": t}])
    for i in range(1, 6):
        send(t, i)
    entries = collect(src, 5)
    assert seqs(entries) == [1, 2, 3, 4, 5]
    src.close()
    again = JournalSource([{"PS_TEST": t}])
    try:
        again.seek(entries[1].cursor)
        assert seqs(collect(again, 3)) == [3, 4, 5]
        again.seek(entries[-1].cursor)  # the last one read: nothing is replayed
        send(t, 6)
        assert seqs(collect(again, 1)) == [6]
        assert settle(again) == []
        again.seek(entries[2].cursor)
        assert seqs(again.read(1)) == [4]  # read() is bounded by its limit
        assert seqs(again.read()) == [5, 6]
    finally:
        again.close()


def test_cursor_of_an_entry_the_filter_does_not_match(journald: str) -> None:
    """A cursor saved by another filter (or before a filter changed): resume after it, losing nothing."""
    t = tag()
    other = tag()
    send(t, 1)
    send(other, 2)
    send(t, 3)
    send(t, 4)
    stored(t, 4)
    reader = journal.Reader()
    reader.add_match(PS_TEST=other)
    reader.seek_head()
    cursor = reader.get_next()["__CURSOR"]
    reader.close()
    src = JournalSource([{"PS_TEST": t}])
    try:
        src.seek(cursor)
        assert seqs(collect(src, 2)) == [3, 4]
    finally:
        src.close()


def test_seek_end_then_first_matching_records_are_read(journald: str) -> None:
    """The Reader pitfall: add_match + seek_tail() (+ get_previous()) while nothing matches yet, then several
    records before the first read: python's Reader returns only the last of them. Ours returns them all."""
    for variant in ("none match yet", "some matched before", "constructor only"):
        t = tag()
        send(t + "x", 0)  # records exist, none match
        if variant == "some matched before":
            send(t, 0)
        stored(t + "x", 0)
        if variant == "some matched before":
            stored(t, 0)
        src = JournalSource([{"PS_TEST": t}])  # the constructor seeks to the end
        try:
            if variant != "constructor only":
                src.seek(None)
            for i in (1, 2, 3):
                send(t, i)
            assert seqs(collect(src, 3)) == [1, 2, 3]
            send(t, 4)
            assert seqs(collect(src, 1)) == [4]
        finally:
            src.close()


def test_naive_tail_seek_loses_records(journald: str) -> None:
    """Keeps the pitfall measured: if python-systemd ever fixes it, the workaround can go."""
    t = tag()
    send(t + "x", 0)
    reader = journal.Reader()
    reader.add_match(PS_TEST=t)
    reader.seek_tail()
    reader.get_previous()
    for i in (1, 2, 3):
        send(t, i)
    stored(t, 3)
    got: list[str] = []
    deadline = time.monotonic() + 1.0
    while len(got) < 3 and time.monotonic() < deadline:
        reader.wait(0.05)
        while entry := reader.get_next():
            got.append(entry["PS_SEQ"])
    reader.close()
    assert got == ["3"], "python-systemd no longer loses records after a filtered tail seek"


def test_seek_end_does_not_replay(journald: str) -> None:
    t = tag()
    send(t, 1)
    stored(t, 1)
    src = JournalSource([{"PS_TEST": t}])
    try:
        assert settle(src) == []
        send(t, 2)
        assert seqs(collect(src, 1)) == [2]
    finally:
        src.close()


def test_record_from_an_unprivileged_user_carries_its_uid(journald: str) -> None:
    logger = shutil.which("logger")
    assert logger, "util-linux logger is needed"
    t = tag()
    src = JournalSource([{"PS_TEST": t}])
    try:
        subprocess.run(["setpriv", "--reuid", str(NOBODY), "--regid", str(NOBODY), "--clear-groups",
                        logger, "--journald"], input=f"MESSAGE=forged\nPS_TEST={t}\nPS_SEQ=1\n_UID=0\n",
                       text=True, check=True, timeout=10)
        (e,) = collect(src, 1)
    finally:
        src.close()
    assert e.fields["_UID"] == str(NOBODY)  # the writer's attempt to set _UID is ignored by journald
    assert e.fields["_GID"] == str(NOBODY)


def test_unreadable_journal_is_an_error_not_silence(journald: str) -> None:
    """A reader without permission (not root, not in systemd-journal) raises instead of returning nothing."""
    assert journal_readable()
    pid = os.fork()
    if pid == 0:  # the child drops to nobody and reports by exit status
        code = 1
        try:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            code = 2 if journal_readable() else 3
            try:
                JournalSource([])
            except JournalUnavailable as exc:
                code = 0 if code == 3 and "systemd-journal" in str(exc) else 4
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_journal_readable_in_an_empty_directory(tmp_path: Path) -> None:
    assert not journal_readable(str(tmp_path))
    with pytest.raises(JournalUnavailable):
        JournalSource([], path=str(tmp_path))


WRITER = """
import sys
from systemd import journal
from portsentinel.common.wake import send_wake
journal.send("wake test", PS_TEST=sys.argv[1], PS_SEQ="1")
send_wake(sys.argv[2])
"""


def test_wake_socket_makes_the_record_readable_at_once(journald: str, tmp_path: Path) -> None:
    t = tag()
    path = str(tmp_path / "run" / "wake.sock")
    wake = WakeSocket(path)
    src = JournalSource([{"PS_TEST": t}])
    try:
        assert os.stat(path).st_mode & 0o777 == 0o660
        env = dict(os.environ)
        subprocess.run([sys.executable, "-c", WRITER, t, path], check=True, env=env, timeout=20)
        ready = select.select([wake], [], [], 5)[0]
        assert ready == [wake]
        assert wake.drain() == 1
        src.process()
        got: list[Entry] = []
        deadline = time.monotonic() + 0.02  # the responder's bounded retry
        while not got and time.monotonic() < deadline:
            got = src.read()
            if not got:
                time.sleep(0.001)
        assert seqs(got) == [1]
        assert wake.drain() == 0
    finally:
        src.close()
        wake.close()
    assert not os.path.exists(path)


def test_wake_socket_replaces_a_stale_file_and_refuses_a_live_one(tmp_path: Path) -> None:
    path = str(tmp_path / "wake.sock")
    first = WakeSocket(path)
    with pytest.raises(OSError):
        WakeSocket(path)  # another responder listens there
    first.sock.close()  # dies without cleaning up: a stale socket file stays
    assert os.path.exists(path)
    second = WakeSocket(path)
    send_wake(path)
    send_wake(path)
    assert select.select([second], [], [], 2)[0] == [second]
    assert second.drain() == 2
    second.close()
    send_wake(path)  # nobody listens: ignored
    send_wake("")
    Path(path).write_text("not a socket")
    with pytest.raises(OSError):
        WakeSocket(path)
    assert Path(path).read_text() == "not a socket"


BURST = """
import sys
from systemd import journal
from portsentinel.common.wake import send_wake
for i in range(int(sys.argv[3])):
    journal.send("burst record", PS_TEST=sys.argv[1], PS_SEQ=str(i))
    send_wake(sys.argv[2])
"""


def test_concurrent_writer_every_record_once_in_order(journald: str, tmp_path: Path) -> None:
    """Reading while journald appends (woken after each record): nothing lost, nothing twice, in order.

    Without JournalSource's re-seek at the end of a read, sd-journal's filtered reader now and then stays
    blind to the entry being appended until the next one arrives (about 1 in 1,000 reads here)."""
    t = tag()
    count = 1500
    path = str(tmp_path / "wake.sock")
    wake = WakeSocket(path)
    src = JournalSource([{"PS_TEST": t}])
    env = dict(os.environ)
    writer = subprocess.Popen([sys.executable, "-c", BURST, t, path, str(count)], env=env)
    got: list[Entry] = []
    try:
        deadline = time.monotonic() + 60
        while len(got) < count and time.monotonic() < deadline:
            fds: list[JournalSource | WakeSocket] = [src, wake]
            ready = select.select(fds, [], [], 0.5)[0]
            if wake in ready:
                wake.drain()
            src.process()
            got.extend(src.read(100))
        assert writer.wait(30) == 0
        got.extend(settle(src))
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
        src.close()
        wake.close()
    assert seqs(got) == list(range(count))
    assert len({e.cursor for e in got}) == count


PINGPONG = """
import sys
from systemd import journal
from portsentinel.common.wake import send_wake
for line in sys.stdin:
    journal.send("ping record", PS_TEST=sys.argv[1], PS_SEQ=line.strip())
    send_wake(sys.argv[2])
"""


def test_each_record_is_readable_as_soon_as_it_is_stored(journald: str, tmp_path: Path) -> None:
    """One record at a time, read the moment it is stored (the responder's wake path).

    sd-journal's filtered reader (systemd 252) that looked while journald was appending can stay blind to that
    entry until another one arrives; JournalSource re-seeks when a read finds nothing, so every record is seen
    without a further record to push it out."""
    t = tag()
    path = str(tmp_path / "wake.sock")
    wake = WakeSocket(path)
    src = JournalSource([{"PS_TEST": t}])
    env = dict(os.environ)
    writer = subprocess.Popen([sys.executable, "-c", PINGPONG, t, path], stdin=subprocess.PIPE, text=True, env=env)
    assert writer.stdin is not None
    late: list[int] = []
    try:
        for i in range(1500):
            writer.stdin.write(f"{i}\n")
            writer.stdin.flush()
            assert select.select([wake], [], [], 5)[0]
            wake.drain()
            src.process()
            deadline = time.monotonic() + 1.0
            got = src.read()
            while not got and time.monotonic() < deadline:
                time.sleep(0.0001)
                got = src.read()
            if not got:  # blind: only journald's delayed notification or the next record would show it
                late.append(i)
                got = collect(src, 1, timeout=2.0)
            assert seqs(got) == [i]
    finally:
        writer.stdin.close()
        writer.wait(10)
        src.close()
        wake.close()
    assert late == []
