"""portsentinel.fleet.store: the spool (one operation per key, bounded), own keys, the watch's atomic commit."""

from __future__ import annotations

from pathlib import Path

from portsentinel.fleet import codec as C
from portsentinel.fleet.store import LOG_ROWS, Store


def test_spool_order_replacement_bound_and_own_keys(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "s.sqlite3"), spool_max=3)
    assert store.spool([("a.j.1-2-3-4", b"1"), ("a.j.1-2-3-5", b"2"), ("a.j.1-2-3-4", None)]) == 0
    assert [(k, v) for _, k, v in store.spooled(10)] == [("a.j.1-2-3-5", b"2"), ("a.j.1-2-3-4", None)]
    assert store.spool([("a.j.1-2-3-6", b"3"), ("a.j.1-2-3-7", b"4")]) == 1 and store.dropped == 1
    assert [k for _, k, _ in store.spooled(10)] == ["a.j.1-2-3-4", "a.j.1-2-3-6", "a.j.1-2-3-7"]
    rows = store.spooled(10)
    store.sent(rows)
    assert store.spool_size() == 0
    store.spool([("a._unban.1-2-3-6", b"m"), ("a.k.1-2-3-6", b"5")])
    assert store.own_keys("1-2-3-6") == ["a.j.1-2-3-6", "a.k.1-2-3-6"]  # the marker is not deleted with them
    assert store.own_keys("1-2-3-4") == []  # its delete went out


def test_watch_commit_survives_a_reopen(tmp_path: Path) -> None:
    path = str(tmp_path / "s.sqlite3")
    store = Store(path, spool_max=10)
    ban = C.Ban("203.0.113.7", "j", 2e9, "syn", 1, 2, 1e9)
    store.commit_watch(42, [(("b", "j", "203.0.113.7"), ban), (("c", "j", "203.0.113.8"), None)])
    store.set_cursor("1:2:3")
    store.close()
    again = Store(path, spool_max=10)
    assert again.last_seq() == 42 and again.remote_bans() == [("b", ban)] and again.cursor() == "1:2:3"
    again.commit_watch(43, [(("b", "j", "203.0.113.7"), None)])
    assert again.remote_bans() == [] and again.last_seq() == 43
    again.reset_watch()
    assert again.last_seq() == 0


def test_a_big_commit_is_one_log_row_folded_at_the_next_start(tmp_path: Path) -> None:
    """A catch-up's commit (LOG_ROWS changes or more) is one row of remote_log; every later commit goes there too,
    in order; the next start folds the log into the table: the same view as row-by-row commits."""
    path = str(tmp_path / "s.sqlite3")
    store = Store(path, spool_max=10)
    addrs = [f"198.51.100.{i}" for i in range(250)] + [f"203.0.113.{i}" for i in range(LOG_ROWS - 250)]
    bans = {("b", "j", addr): C.Ban(addr, "j", 2e9 + i, "syn", i % 2, 1 + i, 1e9) for i, addr in enumerate(addrs)}
    store.commit_watch(10, bans.items())
    assert store.db.execute("SELECT count(*) FROM remote_log").fetchone()[0] == 1
    assert store.db.execute("SELECT count(*) FROM remote").fetchone()[0] == 0
    gone = ("b", "j", "198.51.100.3")
    renewed = C.Ban("198.51.100.4", "j", 3e9, "", 0, 7, 2e9)
    store.commit_watch(11, [(gone, None), (("b", "j", "198.51.100.4"), renewed)])  # small, but after the log
    assert store.db.execute("SELECT count(*) FROM remote_log").fetchone()[0] == 2 and store.last_seq() == 11
    store.close()
    again = Store(path, spool_max=10)
    expected = {bid: ban for bid, ban in bans.items() if bid != gone}
    expected[("b", "j", "198.51.100.4")] = renewed
    assert {("b", ban.jail, ban.addr): ban for _, ban in again.remote_bans()} == expected
    assert again.db.execute("SELECT count(*) FROM remote_log").fetchone()[0] == 0 and again.last_seq() == 11
    again.commit_watch(12, [(("b", "j", "203.0.113.1"), None)])  # the log is empty again: row by row
    assert again.db.execute("SELECT count(*) FROM remote_log").fetchone()[0] == 0
    assert len(again.remote_bans()) == len(expected) - 1


def test_an_unreadable_log_resets_the_watch(tmp_path: Path) -> None:
    import marshal

    path = str(tmp_path / "s.sqlite3")
    store = Store(path, spool_max=10)
    store.commit_watch(5, [(("b", "j", "203.0.113.9"), C.Ban("203.0.113.9", "j", 2e9, "syn", 0, 1, 1e9))])
    for blob in (b"\x00garbage", marshal.dumps({"not": "a list"}), marshal.dumps([("b", "j", 3)]),
                 marshal.dumps([("b", "203.0.113.1", "j", "2e9", "syn", 0, 1, 1e9)])):
        with store.db:
            store.db.execute("INSERT INTO remote_log (rows) VALUES (?)", (blob,))
        assert store.remote_bans() == [] and store.last_seq() == 0  # a full catch-up follows
        store.commit_watch(5, [(("b", "j", "203.0.113.9"), C.Ban("203.0.113.9", "j", 2e9, "syn", 0, 1, 1e9))])
