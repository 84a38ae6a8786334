"""responder.adapters.store on a real sqlite file: bans, pending unbans, offences, cursors, and what a crash leaves.

A crash is a real one: a child process opens the store, commits, and kills itself with SIGKILL in the middle of a
transaction (a generator handed to ``commit`` does it while sqlite holds the transaction open). The parent then
opens the same file as the responder would at its next start.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

from portsentinel.responder.adapters.store import Store
from portsentinel.responder.core.bans import FOREVER, Ban

A = Ban("scan", "203.0.113.5", 100.0, 160.0, 1, 3, {"port": "22", "proto": "tcp"}, matches="attackalert")
B = Ban("scan", "2001:db8:1:2::/64", 101.0, FOREVER, 2, 1, {"src": "2001:db8:1:2::7"})
C = Ban("sshd", "203.0.113.5", 102.0, 702.0, 1, 5, {})


def _store(tmp_path: Path) -> Store:
    return Store(str(tmp_path / "state" / "responder.sqlite3"))


def test_file_mode_wal_and_a_reopen_gives_back_every_row(tmp_path: Path) -> None:
    s = _store(tmp_path)
    s.commit(added=[A, B, C], cursors={"journal": "s=1;i=2", "file:/var/log/x.jsonl": "4096"})
    s.close()
    path = tmp_path / "state" / "responder.sqlite3"
    assert path.stat().st_mode & 0o777 == 0o640 and path.parent.stat().st_mode & 0o777 == 0o750
    with sqlite3.connect(path) as raw:  # WAL is a property of the file: any later connection uses it
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    s = _store(tmp_path)
    assert sorted(s.bans(), key=lambda b: (b.jail, b.ip)) == [B, A, C]
    assert all(b.matches == "" for b in s.bans())  # the matched text is kept in memory only
    assert (s.cursor("journal"), s.cursor("file:/var/log/x.jsonl"), s.cursor("other")) == ("s=1;i=2", "4096", None)
    assert (s.offences("scan", A.ip), s.offences("scan", B.ip), s.offences("sshd", C.ip)) == (1, 2, 1)
    assert s.offences("sshd", "198.51.100.1") == 0 and s.unbans() == []


def test_offences_are_per_jail_and_follow_the_latest_ban(tmp_path: Path) -> None:
    s = _store(tmp_path)
    s.commit(added=[A])
    again = Ban("scan", A.ip, 500.0, 620.0, 2, 1, {})
    s.commit(unbanning=[(A, "expired")], now=160.0)
    s.commit(unbanned=[("scan", A.ip)], added=[again])
    assert s.offences("scan", A.ip) == 2 and s.offences("sshd", A.ip) == 0
    assert s.db.execute("SELECT last FROM offences WHERE jail='scan' AND ip=?", (A.ip,)).fetchone() == (500.0,)
    assert s.bans() == [again]  # the same (jail, ip) is one row


def test_an_unban_is_pending_until_its_actions_are_done(tmp_path: Path) -> None:
    s = _store(tmp_path)
    s.commit(added=[A, B])
    s.commit(unbanning=[(A, "expired"), (B, "manual")], now=170.0)
    assert s.bans() == []
    assert s.unbans() == [(A, "expired", 170.0), (B, "manual", 170.0)]
    s.close()
    s = _store(tmp_path)  # a restart before the actions ran: the unbans are still to do
    assert [(b.ip, why) for b, why, _ in s.unbans()] == [(A.ip, "expired"), (B.ip, "manual")]
    s.commit(unbanned=[("scan", A.ip)])
    assert s.unbans() == [(B, "manual", 170.0)]


def test_a_new_ban_cancels_the_pending_unban_of_the_same_ban(tmp_path: Path) -> None:
    s = _store(tmp_path)
    s.commit(added=[A])
    s.commit(unbanning=[(A, "expired")], now=160.0)
    back = Ban("scan", A.ip, 161.0, 400.0, 2, 1, {})
    s.commit(added=[back])
    assert s.unbans() == [] and s.bans() == [back]


def test_removed_rows_go_without_a_pending_unban(tmp_path: Path) -> None:
    s = _store(tmp_path)
    s.commit(added=[A, C])
    s.commit(removed=[("scan", A.ip)])
    assert s.bans() == [C] and s.unbans() == []


def test_a_second_connection_reads_what_the_first_committed(tmp_path: Path) -> None:
    writer, reader = _store(tmp_path), _store(tmp_path)
    writer.commit(added=[A], cursors={"journal": "c1"})
    assert reader.bans() == [A] and reader.cursor("journal") == "c1"


# --------------------------------------------------------------------------- crashes, with a real SIGKILL
CHILD = """
import os, signal, sys
from portsentinel.responder.adapters.store import Store
from portsentinel.responder.core.bans import Ban

s = Store(sys.argv[1])
first = Ban("scan", "192.0.2.10", 10.0, 70.0, 1, 1, {})
s.commit(added=[first], cursors={"journal": "before"})
step = sys.argv[2]

def dies_after_one(items):
    yield items[0]
    os.kill(os.getpid(), signal.SIGKILL)  # inside the open transaction, before sqlite commits
    yield from items[1:]

if step == "ban":
    two = [Ban("scan", "192.0.2.11", 20.0, 80.0, 1, 1, {}), Ban("scan", "192.0.2.12", 20.0, 80.0, 1, 1, {})]
    s.commit(added=dies_after_one(two), cursors={"journal": "after"})
elif step == "unban":
    s.commit(unbanning=dies_after_one([(first, "expired"), (first, "again")]), now=70.0)
elif step == "committed":
    s.commit(added=[Ban("scan", "192.0.2.13", 30.0, 90.0, 1, 1, {})], cursors={"journal": "after"})
    os.kill(os.getpid(), signal.SIGKILL)  # right after commit() returned: nothing closed, nothing checkpointed
"""


def _crash(tmp_path: Path, step: str) -> Store:
    path = tmp_path / "state" / "responder.sqlite3"
    done = subprocess.run([sys.executable, "-c", CHILD, str(path), step], capture_output=True, text=True, timeout=60)
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert Path(f"{path}-wal").exists()  # the child died with its write-ahead log in place
    s = Store(str(path))
    assert s.db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    return s


def test_a_crash_inside_a_ban_transaction_leaves_neither_the_bans_nor_the_cursor(tmp_path: Path) -> None:
    s = _crash(tmp_path, "ban")
    assert [b.ip for b in s.bans()] == ["192.0.2.10"]
    assert s.cursor("journal") == "before"  # the entry is read again, and banned again, after the restart
    assert s.offences("scan", "192.0.2.11") == 0


def test_a_crash_inside_an_unban_transaction_keeps_the_ban(tmp_path: Path) -> None:
    s = _crash(tmp_path, "unban")
    assert [b.ip for b in s.bans()] == ["192.0.2.10"] and s.unbans() == []


def test_what_commit_returned_survives_a_crash(tmp_path: Path) -> None:
    s = _crash(tmp_path, "committed")
    assert sorted(b.ip for b in s.bans()) == ["192.0.2.10", "192.0.2.13"]
    assert s.cursor("journal") == "after"


def test_info_text_is_json_dumps_sorted() -> None:
    """The stored info text is json.dumps(info, sort_keys=True)'s, escapes and all (one C encoder made once)."""
    import json

    from portsentinel.responder.adapters.store import _info_text

    for info in ({}, {"b": "2", "a": "1"}, {"note": 'quote " backslash \\ tab \t é \u2028', "origin": "h"}):
        assert _info_text(info) == json.dumps(info, sort_keys=True)


def test_remote_infos_text_is_json_dumps_sorted() -> None:
    """A remote ban's info (its end time in the text remembered around it) is stored as json.dumps would write
    it, whatever its values, the text around the end time never taken for another info's."""
    import json

    from portsentinel.responder.adapters.store import _MARK, _infos_text

    texts: dict[tuple[tuple[str, str], ...], str] = {}
    remote = {"origin": "host-a", "origin_jail": "portsentinel", "origins": "1", "origin_offence": "2",
              "scan": "syn", "verified": "0"}
    infos = [{**remote, "origin_until": until} for until in ("1796060000.125", "1796060001.500", "17.5", "x\"y")]
    infos += [remote, {**remote, "origin_until": "1796060002.000", "scan": f"a{_MARK}b"},
              {**remote, "origin_until": "1796060003.000", "origin": "host-b"}, {"origin_until": "12.000"}]
    for _ in range(2):
        for info in infos:
            assert _infos_text(info, texts) == json.dumps(info, sort_keys=True), info


def test_repeated_infos_in_one_commit_are_stored_for_each_ban(tmp_path: Path) -> None:
    """One commit's bans sharing an info (its text made once) and remote ones (each its own) read back as given."""
    from portsentinel.responder.adapters.store import Store
    from portsentinel.responder.core.bans import Ban

    bans = [Ban("local", f"192.0.2.{i}", 1.0, 100.0, 1, 1, {"port": "22", "proto": "tcp"} if i % 2 else
                {"proto": "tcp", "port": "22"}) for i in range(1, 9)]
    bans += [Ban("fleet", f"198.51.100.{i}", 1.0, 100.0, 1, 1, {"origin": "a", "origin_until": f"{i}.000"})
             for i in range(1, 4)]
    st = Store(str(tmp_path / "s.sqlite3"))
    st.commit(added=bans)
    st.close()
    again = Store(str(tmp_path / "s.sqlite3"))
    assert sorted((b.ip, b.info) for b in again.bans()) == sorted((b.ip, b.info) for b in bans)
    again.close()


def test_a_sources_starting_cursor_is_committed_or_the_refusal_named(tmp_path: Path) -> None:
    """A source opened without a cursor has its starting point committed (responder.loading); a store that
    refuses the write (here: closed) gives its reason instead of raising: the source is followed all the same."""
    from portsentinel.responder.adapters.store import Store

    s = Store(str(tmp_path / "r.sqlite3"))
    assert s.start_cursor("file:/x", "1:2:30") is None and s.cursor("file:/x") == "1:2:30"
    s.close()
    assert s.start_cursor("file:/y", "1:2:0")
