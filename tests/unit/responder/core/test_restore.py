"""The restore path (issue 13 "Speed", restart): sqlite rows -> set elements in one nft batch, the expired rows
moved to the pending unbans in one statement and lifted, a ban that became never-ban lifted and not re-applied,
the other actions through the per-ban path, and a crash during the restore leaving the store to the next start."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from portsentinel import record as R
from portsentinel.responder.actions.executor import Executor
from portsentinel.responder.adapters.runner import Result
from portsentinel.responder.adapters.store import Store
from portsentinel.responder.config.jailconf import ActionRef, JailConfig
from portsentinel.responder.core.bans import FOREVER, Ban, BanBook
from portsentinel.responder.core.keeper import Keeper
from tests.conftest import ROOT

NOW = 10_000.0


class Runner:
    def __init__(self, die_on_batch: bool = False) -> None:
        self.calls: list[tuple[list[str], str | None]] = []
        self.die_on_batch = die_on_batch

    def run(self, argv: Sequence[str], *, input: str | None = None, timeout: float | None = None) -> Result:
        if self.die_on_batch and input is not None and "add element" in input:
            raise SystemExit("killed during the restore")  # stands for a crash in the middle of the transaction
        self.calls.append((list(argv), input))
        return Result(tuple(argv), 0)


def _keeper(path: Path, runner: Runner, actions: list[ActionRef]) -> tuple[Keeper, list[tuple[Any, str]]]:
    reports: list[tuple[Any, str]] = []
    ex = Executor(ROOT / "actions.d", lambda ev, msg, **f: reports.append((ev, msg)), runner)
    ex.configure(JailConfig(name="j", where="x", enabled=True, filter="portsentinel", actions=actions))
    return Keeper(Store(str(path)), BanBook(), ex, ex.report, clock=lambda: NOW), reports


def _fill(path: Path) -> None:
    s = Store(str(path))
    s.commit(added=[Ban("j", f"198.51.100.{i}", NOW - 100, NOW + 500 + i) for i in range(1, 101)]
             + [Ban("j", f"203.0.113.{i}", NOW - 900, NOW - i) for i in range(1, 11)]  # expired while stopped
             + [Ban("j", "192.0.2.1", NOW - 100, FOREVER), Ban("j", "2001:db8::/64", NOW - 100, NOW + 60,
                                                           info={"src": "2001:db8::7"}),
                Ban("j", "192.0.2.66", NOW - 100, NOW + 60),  # protected now
                Ban("j", "2001:db8:5::9", NOW - 100, NOW + 90)])
    s.close()


def _batch(runner: Runner) -> str:
    scripts = [text for argv, text in runner.calls if argv == ["nft", "-f", "-"] and text and "add element" in text
               and "delete element" not in text]
    assert len(scripts) == 1  # every element in one transaction
    return scripts[0]


def test_restore_puts_the_unexpired_rows_into_one_batch_and_lifts_the_rest(tmp_path: Path) -> None:
    db = tmp_path / "s.sqlite3"
    _fill(db)
    runner = Runner()
    k, reports = _keeper(db, runner, [ActionRef("nftables", {"name": "scan"}, "x")])
    k.restore(["j"], protected=lambda b: "own address" if b.ip == "192.0.2.66" else None)
    text = _batch(runner)
    v4 = text.split("scan_v4 { ")[1].split(" }")[0].split(", ")
    assert sorted(v4) == sorted([f"198.51.100.{i} timeout {500 + i + 1}s" for i in range(1, 101)] + ["192.0.2.1"])
    # a network to the interval set, an address of the same family to the hash set
    assert "add element inet portsentinel scan_v6net { 2001:db8::/64 timeout 61s }" in text
    assert "add element inet portsentinel scan_v6 { 2001:db8:5::9 timeout 91s }" in text
    assert "203.0.113." not in text and "192.0.2.66 " not in text
    # the expired and the protected: lifted (their unban ran), gone from the store, not in the book
    unbans = [m for ev, m in reports if ev is R.Event.UNBAN]
    assert len(unbans) == 11 and sum("expired while stopped" in m for m in unbans) == 10
    deletes = [text for _, text in runner.calls if text and "delete element" in text]
    assert len(deletes) == 1  # the expired and the protected, all in one transaction
    assert {f"203.0.113.{i}" for i in range(1, 11)} | {"192.0.2.66"} == set(
        deletes[0].split("delete element inet portsentinel scan_v4 { ")[1].split(" }")[0].split(", "))
    assert sum("never banned now: own address" in m for m in unbans) == 1
    assert k.store.unbans() == [] and len(k.store.bans()) == 103 and len(k.book) == 103
    assert k.book.get("j", "192.0.2.66") is None and k.book.next_expiry() == NOW + 60
    assert any("restored 103 ban(s)" in m and "10 expired while stopped" in m and "1 now never banned" in m
               for ev, m in reports if ev is R.Event.BAN)


def test_a_command_action_beside_the_set_still_gets_each_ban(tmp_path: Path) -> None:
    db = tmp_path / "s.sqlite3"
    _fill(db)
    runner = Runner()
    k, _ = _keeper(db, runner, [ActionRef("nftables", {"name": "scan"}, "x"), ActionRef("route", {}, "x")])
    k.restore(["j"])
    # one route per unexpired ban (nothing is protected here); an expired one's unban puts its route in place and
    # deletes it (idempotent), so none of them is left
    def routes(verb: str) -> set[str]:
        return {argv[5] for argv, _ in runner.calls if argv[:5] in (["ip", "-4", "route", verb, "blackhole"],
                                                                     ["ip", "-6", "route", verb, "blackhole"])}
    held = routes("replace") - routes("del")
    assert held == {f"198.51.100.{i}/32" for i in range(1, 101)} | {"192.0.2.1/32", "192.0.2.66/32", "2001:db8::/64",
                    "2001:db8:5::9/128"}
    assert routes("del") == {f"203.0.113.{i}/32" for i in range(1, 11)}
    assert len(_batch(runner).split("scan_v4 { ")[1].split(", ")) == 102  # 100, 192.0.2.1 and .66


def test_a_crash_during_the_restore_leaves_the_store_for_the_next_start(tmp_path: Path) -> None:
    db = tmp_path / "s.sqlite3"
    _fill(db)
    k, _ = _keeper(db, Runner(die_on_batch=True), [ActionRef("nftables", {"name": "scan"}, "x")])
    try:
        k.restore(["j"])
    except SystemExit:
        pass
    k.store.close()
    # the store as it was: every row there (the expired ones are moved to the pending unbans after the restore)
    again = Store(str(db))
    assert len(again.bans()) == 114 and len(again.unbans()) == 0
    again.close()
    runner = Runner()
    k2, _ = _keeper(db, runner, [ActionRef("nftables", {"name": "scan"}, "x")])
    k2.restore(["j"])
    assert len(_batch(runner).split("scan_v4 { ")[1].split(", ")) == 102 and k2.store.unbans() == []


def test_the_book_filled_at_once_is_the_book_filled_one_by_one() -> None:
    bans = [Ban("j", f"198.51.100.{i}", 0.0, 1000.0 - i) for i in range(1, 200)]
    bans += [Ban("j", "2001:db8::/64", 0.0, 50.5), Ban("k", "192.0.2.0/24", 0.0, FOREVER)]
    one, many = BanBook(), BanBook()
    one.add(Ban("j", "203.0.113.1", 0.0, 70.0))
    many.add(Ban("j", "203.0.113.1", 0.0, 70.0))
    many.inside("j", "198.51.100.0/24")  # an index built before: kept up to date
    for b in bans:
        one.add(b)
    many.add_many(bans)
    assert many.active == one.active and many.next_expiry() == one.next_expiry() == 50.5
    assert many.covering("k", "192.0.2.9") is one.covering("k", "192.0.2.9") is bans[-1]
    assert len(many.inside("j", "198.51.100.0/24")) == 199
    assert [b.ip for b in many.due(805.0)] == [b.ip for b in one.due(805.0)]


def test_the_screen_asks_only_about_addresses_a_protected_first_byte_starts(tmp_path: Path) -> None:
    """Keeper.restore with the service's screen (NeverBan.suspects): of a chunk of IPv4 rows, only those that
    start like a protected address are checked one by one, and the protected one is still lifted."""
    from portsentinel.responder.core.guard import NeverBan
    db = tmp_path / "s.sqlite3"
    s = Store(str(db))
    s.commit(added=[Ban("j", f"198.51.100.{i}", NOW - 100, NOW + 500) for i in range(1, 101)]
             + [Ban("j", "192.0.2.66", NOW - 100, NOW + 60), Ban("j", "192.0.2.5", NOW - 100, NOW + 60)])
    s.close()
    never = NeverBan(own=["192.0.2.66"])
    asked: list[str] = []

    def protected(b: Ban) -> str | None:
        asked.append(b.ip)
        return never.why(b.ip)

    def screen(jail: str, ips: list[str]) -> set[str] | None:
        assert jail == "j"
        return never.suspects(ips)

    runner = Runner()
    k, reports = _keeper(db, runner, [ActionRef("nftables", {"name": "scan"}, "x")])
    k.restore(["j"], protected=protected, screen=screen)
    assert sorted(asked) == ["192.0.2.5", "192.0.2.66"]
    v4 = _batch(runner).split("scan_v4 { ")[1].split(" }")[0].split(", ")
    assert len(v4) == 101 and "192.0.2.5 timeout 61s" in v4 and not any(e.startswith("192.0.2.66 ") for e in v4)
    assert any("never banned now: own address" in m for ev, m in reports if ev is R.Event.UNBAN)
    assert k.book.get("j", "192.0.2.66") is None and len(k.book) == 101


def test_every_element_goes_to_the_kernel_before_any_ban_is_made(tmp_path: Path, monkeypatch: Any) -> None:
    """In force first: the rows' set elements are handed to the worker (the last chunk included) before the rows
    become bans for the book; the book is filled all the same."""
    from portsentinel.responder.actions import restore as restore_mod
    from portsentinel.responder.core import keeper as keeper_mod

    db = tmp_path / "s.sqlite3"
    s = Store(str(db))
    s.commit(added=[Ban("j", f"100.80.{i // 250}.{i % 250 + 1}", NOW - 100, NOW + 500) for i in range(3000)])
    s.close()
    events: list[str] = []
    from portsentinel.responder.adapters.store import bans_of_rows as made

    submit = restore_mod.Restorer._submit

    def logged_submit(self: Any, ch: Any) -> None:
        events.append("submit")
        submit(self, ch)

    def logged_bans(rows: Any, infos: Any) -> list[Ban]:
        events.append("bans")
        return made(rows, infos)

    monkeypatch.setattr(restore_mod.Restorer, "_submit", logged_submit)
    monkeypatch.setattr(keeper_mod, "bans_of_rows", logged_bans)
    monkeypatch.setattr(keeper_mod, "CHUNK", 4000)  # rows read 1,000 at a time
    runner = Runner()
    k, _ = _keeper(db, runner, [ActionRef("nftables", {"name": "scan"}, "x")])
    k.restore(["j"], screen=lambda jail, ips: set())  # (none to ask about: as the service's screen, usually)
    assert "submit" in events and "bans" in events
    assert events.index("bans") > max(i for i, e in enumerate(events) if e == "submit")
    assert len(k.book) == 3000
    assert sum(text.count(" timeout ") for argv, text in runner.calls if text and "add element" in text) == 3000
