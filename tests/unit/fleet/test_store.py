"""portsentinel.fleet.store: the spool (one operation per key, bounded), own keys, the watch's atomic commit."""

from __future__ import annotations

from pathlib import Path

from portsentinel.fleet import codec as C
from portsentinel.fleet.store import Store


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
