"""A backlog's bans in force before their rows (Keeper.apply with ``more``): the rows, the cursor and the records
wait for a later batch's, and are all written by the settle that ends the backlog, at the bound, or before any
other step of the keeper."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from portsentinel.responder.adapters.store import Store
from portsentinel.responder.core import keeper as K
from portsentinel.responder.core.bans import Ban, BanBook


class SetsOnly:
    """The executor's part the keeper uses for bans the kernel lifts on its own: what it put in force (at once),
    and what it reported."""

    def __init__(self) -> None:
        self.in_force: list[str] = []
        self.reported: list[str] = []

    def kernel_expires(self, bans: list[Ban]) -> bool:
        return True

    def ban_many_later(self, bans: list[Ban], *, now: float) -> Callable[[], list[tuple[Ban, list[str]]]]:
        self.in_force += [b.ip for b in bans]
        return lambda: [(b, ["nftables"]) for b in bans]

    def report_applied(self, applied: list[tuple[Ban, list[str]]]) -> None:
        self.reported += [b.ip for b, _ in applied]


def _keeper(tmp_path: Path) -> tuple[K.Keeper, SetsOnly]:
    ex = SetsOnly()
    return K.Keeper(Store(str(tmp_path / "s.sqlite3")), BanBook(), ex, lambda *a, **k: None,  # type: ignore[arg-type]
                    clock=lambda: 1000.0), ex


def _bans(first: int, n: int) -> list[Ban]:
    return [Ban("j", f"100.73.{(first + i) // 250}.{(first + i) % 250 + 1}", 1000.0, 1600.0) for i in range(n)]


def _rows(k: K.Keeper) -> int:
    return len(k.store.bans())


def test_a_backlogs_bans_are_in_force_first_and_committed_together_with_the_last_cursor(tmp_path: Path) -> None:
    k, ex = _keeper(tmp_path)
    one, two, three = _bans(0, 300), _bans(300, 300), _bans(600, 10)
    k.apply(one, {"src": "c1"}, more=True)
    k.apply(two, {"src": "c2"}, more=True)
    assert len(ex.in_force) == 600 and _rows(k) == 0 and ex.reported == []
    assert k.store.cursor("src") is None  # nothing committed: a crash reads the backlog again
    k.apply(three, {"src": "c3"})  # the backlog's last batch
    assert _rows(k) == 610 and len(ex.reported) == 610 and k.store.cursor("src") == "c3"


def test_a_backlog_without_bans_holds_only_its_cursor_then_the_end_commits_it(tmp_path: Path) -> None:
    k, ex = _keeper(tmp_path)
    k.apply([], {"src": "c1"}, more=True)
    k.apply(_bans(0, 5), {"src": "c2"}, more=True)
    assert k.store.cursor("src") is None
    k.settle()  # (the pump's end, or any other step of the keeper)
    assert k.store.cursor("src") == "c2" and _rows(k) == 5 and len(ex.reported) == 5


def test_other_steps_settle_the_held_bans_first(tmp_path: Path) -> None:
    k, ex = _keeper(tmp_path)
    bans = _bans(0, 20)
    k.apply(bans, {"src": "c1"}, more=True)
    k.unban_due()  # the service's turn: nothing due, but the held bans are committed first
    assert _rows(k) == 20 and k.store.cursor("src") == "c1" and len(ex.reported) == 20


def test_the_hold_is_bounded_in_bans(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(K, "HOLD_BANS", 100)
    k, ex = _keeper(tmp_path)
    k.apply(_bans(0, 60), {"src": "c1"}, more=True)
    assert _rows(k) == 0
    k.apply(_bans(60, 60), {"src": "c2"}, more=True)  # 120 held: over the bound, settled at once
    assert _rows(k) == 120 and k.store.cursor("src") == "c2" and len(ex.reported) == 120
    k.apply(_bans(120, 1), {"src": "c3"}, more=True)  # a new hold
    assert _rows(k) == 120 and k.store.cursor("src") == "c2"


def test_the_hold_is_bounded_in_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    k, _ = _keeper(tmp_path)
    k.apply([], {"src": "c1"}, more=True)
    monkeypatch.setattr(K, "HOLD_SECONDS", 0.0)
    k.apply([], {"src": "c2"}, more=True)
    assert k.store.cursor("src") == "c2"
