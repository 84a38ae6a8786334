"""Issue 10 items 1, 2, 4, 5 without a kernel: bounded bantimes, name grammars, pending unbans, reload plans,
netlink parsing, and one bad entry or ban never stopping the service."""

from __future__ import annotations

import socket
import struct
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from portsentinel import record as R
from portsentinel.responder.actions.action import ActionError, load_action
from portsentinel.responder.actions.executor import Executor
from portsentinel.responder.adapters.nlmonitor import nft_deleted, parse_routes
from portsentinel.responder.adapters.runner import Result
from portsentinel.responder.adapters.store import Store
from portsentinel.responder.config.jailconf import ActionRef, JailConfig, load, parse_duration, parse_factor
from portsentinel.responder.config.names import problem
from portsentinel.responder.config.reload import plan
from portsentinel.responder.core.bans import FOREVER, Ban, BanBook, bantime_for
from portsentinel.responder.core.engine import Decision, Engine, JailRuntime
from portsentinel.responder.core.guard import NeverBan, PerMinuteCap
from portsentinel.responder.core.health import Health
from portsentinel.responder.core.jail import Jail
from portsentinel.responder.core.keeper import Keeper
from portsentinel.responder.core.sources import Entry
from portsentinel.responder.core.unbans import LATER, PendingUnbans
from tests.conftest import ROOT

ACTIONS = ROOT / "actions.d"


# ------------------------------------------------------------------------------------- bounded arithmetic
@pytest.mark.parametrize("offence", [1024, 1025, 1101, 10**6, 10**18])
def test_bantime_is_bounded_at_any_offence(offence: int) -> None:
    cfg = JailConfig(name="j", where="x", bantime=600, bantime_increment=True, bantime_factor=2,
                     bantime_maxtime=86400)
    assert bantime_for(cfg, offence) == 86400


def test_bantime_grows_then_caps() -> None:
    cfg = JailConfig(name="j", where="x", bantime=60, bantime_increment=True, bantime_factor=1.5,
                     bantime_maxtime=200)
    assert [bantime_for(cfg, n) for n in (1, 2, 3, 4, 5000)] == [60, 90, 135, 200, 200]
    assert bantime_for(JailConfig(name="j", where="x", bantime=FOREVER, bantime_increment=True), 10**9) == FOREVER


@pytest.mark.parametrize("text", ["nan", "inf", "-2", "0.5", "1e9", "x"])
def test_bad_factor_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_factor(text)


def test_absurd_duration_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="too long"):
        parse_duration("20000w")
    (tmp_path / "jail.conf").write_text("[j]\nenabled = true\nfilter = portsentinel\nbantime.factor = nan\n")
    cfg = load(tmp_path)
    assert cfg.jails == [] and "jail.conf:4" in cfg.errors[0] and "bantime.factor" in cfg.errors[0]


# ------------------------------------------------------------------------------------------ name grammars
@pytest.mark.parametrize("kind,name,ok", [
    ("nft", "2fast_v4", False), ("nft", "fast_v4", True), ("nft", "_x", True), ("nft", "a" * 65, False),
    ("iptables", "portsentinel-" + "x" * 15, True), ("iptables", "portsentinel-" + "x" * 16, False),
    ("iptables", "-x", False), ("ipset", "portsentinel-" + "x" * 16 + "-4", True),
    ("ipset", "portsentinel-" + "x" * 17 + "-4", False), ("pf", "x", False),
])
def test_name_grammars(kind: str, name: str, ok: bool) -> None:
    assert (problem(kind, name) is None) == ok


@pytest.mark.parametrize("spec,jail,what", [
    ("nftables", "2fast", "'2fast'"), ("iptables", "sixteen_chars_xx", "at most 28"),
    ("ipset", "seventeen_chars_x", "at most 31"), ("ip6tables[name=2fast-but-far-too-long]", "j", "at most 28"),
])
def test_actions_check_their_names_at_load(spec: str, jail: str, what: str) -> None:
    with pytest.raises(ActionError) as exc:
        load_action(ACTIONS, spec, jail)
    assert f"{ACTIONS}/" in str(exc.value) and ": names: jail " in str(exc.value) and what in str(exc.value)
    load_action(ACTIONS, spec.split("[")[0], "fast")  # a good name loads


# ------------------------------------------------------------------------------------------ pending unbans
def test_pending_unbans_back_off_and_a_new_ban_cancels() -> None:
    pu = PendingUnbans()
    b = Ban("j", "198.51.100.1", 0.0, 10.0)
    p = pu.add(b, "expired", 100.0)
    assert pu.due(99.0) == [] and pu.due(100.0) == [p]
    assert [pu.failed(p, 100.0 + i) for i in range(7)] == [1.0, 2.0, 4.0, 8.0, 16.0, LATER, LATER]
    assert pu.next_due() == 106.0 + LATER
    assert pu.cancel("j", "198.51.100.1") and pu.next_due() is None and len(pu) == 0


class FakeRunner:
    def __init__(self, fail: set[str] | None = None) -> None:
        self.calls: list[list[str]] = []
        self.fail = fail or set()

    def run(self, argv: Sequence[str], *, input: str | None = None, timeout: float | None = None) -> Result:
        self.calls.append(list(argv))
        bad = any(word in self.fail for word in argv)
        return Result(tuple(argv), 1 if bad else 0, stderr="boom" if bad else "")


def _keeper(tmp_path: Path, runner: FakeRunner, actions: list[ActionRef]) -> tuple[Keeper, list[tuple[Any, str]]]:
    reports: list[tuple[Any, str]] = []
    ex = Executor(ACTIONS, lambda ev, msg, **f: reports.append((ev, msg)), runner)
    ex.configure(JailConfig(name="j", where="x", enabled=True, filter="portsentinel", actions=actions))
    return Keeper(Store(str(tmp_path / "s.sqlite3")), BanBook(), ex, ex.report), reports


def test_unban_stays_pending_until_every_action_succeeded(tmp_path: Path) -> None:
    runner = FakeRunner(fail={"del"})
    k, reports = _keeper(tmp_path, runner, [ActionRef("route", {}, "x"), ActionRef("hosts-deny", {}, "x")])
    b = Ban("j", "198.51.100.9", 0.0, 10.0)
    k.apply([b])
    assert [x.ip for x in k.store.bans()] == ["198.51.100.9"]
    k.lift([b], "expired")
    assert k.store.bans() == [] and [x.ip for x, why, _ in k.store.unbans()] == ["198.51.100.9"]
    assert len(k.pending) == 1 and not any(ev is R.Event.UNBAN for ev, _ in reports)
    # A restart: the store still has it; once the actions work, it goes.
    k2, reports2 = _keeper(tmp_path, FakeRunner(), [ActionRef("route", {}, "x"), ActionRef("hosts-deny", {}, "x")])
    k2.restore(["j"])
    assert k2.store.unbans() == [] and any(ev is R.Event.UNBAN for ev, _ in reports2)
    unban_argvs = [c for c in k2.executor.runner.calls if "route" in c]  # type: ignore[attr-defined]
    assert [c[3] for c in unban_argvs] == ["replace", "del"]  # idempotent: put in place, then remove


def test_a_new_ban_cancels_its_pending_unban(tmp_path: Path) -> None:
    k, _ = _keeper(tmp_path, FakeRunner(fail={"del"}), [ActionRef("route", {}, "x")])
    b = Ban("j", "198.51.100.9", 0.0, 10.0)
    k.apply([b])
    k.lift([b], "manual")
    k.apply([Ban("j", "198.51.100.9", 20.0, 80.0, count=2)])
    assert len(k.pending) == 0 and k.store.unbans() == [] and len(k.store.bans()) == 1


# ----------------------------------------------------------------------------------------------- reload
def test_reload_plan() -> None:
    nft = [load_action(ACTIONS, "nftables[name=a]", "a")]
    same = {"a": [load_action(ACTIONS, "nftables[name=a]", "a")]}
    assert plan({"a": nft}, same).unchanged == ["a"]
    p = plan({"a": nft, "b": nft}, {"a": [load_action(ACTIONS, "iptables[name=a]", "a")], "c": []})
    assert p.removed == ["b"] and p.added == ["c"]
    assert [x.name for x in p.changed["a"].gone] == ["nftables"] and [x.name for x in p.changed["a"].fresh] == [
        "iptables"]
    p2 = plan({"a": nft}, {"a": [load_action(ACTIONS, "nftables[name=a, blocktype=reject]", "a")]})
    assert [x.name for x in p2.changed["a"].replaced] == ["nftables"] and "nftables -> nftables" in p2.describe()


# ------------------------------------------------------------------------------------------------ netlink
def _nlmsg(mtype: int, body: bytes) -> bytes:
    data = struct.pack("=IHHII", 16 + len(body), mtype, 0, 0, 0) + body
    return data + b"\0" * (-len(data) % 4)


def test_netlink_parsing() -> None:
    rta = struct.pack("=HH", 8, 1) + socket.inet_aton("198.51.100.3")
    rtm = struct.pack("=BBBBBBBBI", socket.AF_INET, 32, 0, 0, 254, 3, 0, 6, 0)
    assert parse_routes(_nlmsg(25, rtm + rta)) == {"198.51.100.3"}
    assert parse_routes(_nlmsg(24, rtm + rta)) == set()  # a new route: nothing lost
    assert nft_deleted(_nlmsg((10 << 8) | 2, b"\0" * 4))  # DELTABLE
    assert not nft_deleted(_nlmsg((10 << 8) | 14, b"\0" * 4))  # DELSETELEM: our own unbans
    assert parse_routes(b"\xff" * 7) == set() and not nft_deleted(b"")


# ------------------------------------------------------------------------------- one bad entry or ban
class Boom:
    journalmatch: list[dict[str, str]] = []

    def match_record(self, fields: Mapping[str, str]) -> Any:
        if fields.get("PS_SRC") == "198.51.100.66":
            raise RuntimeError("poison")
        return type("H", (), {"host": fields["PS_SRC"]})()

    def match_line(self, line: str) -> Any:
        return None


def test_a_bad_port_field_is_invalid_not_a_crash() -> None:
    cfg = JailConfig(name="j", where="x", trusted_uids=())
    rt = JailRuntime(cfg, Boom(), Jail(cfg), PerMinuteCap(0), "src", False)
    eng = Engine([rt], NeverBan(), BanBook(), type("O", (), {"offences": lambda *a: 0})())
    (d,) = eng.entry("src", Entry({"PS_SRC": "198.51.100.5", "PS_PORT": "abc"}, "", "1", True), 0.0)
    assert isinstance(d, Decision) and d.kind == "invalid" and "PS_PORT 'abc'" in d.reason


def test_poison_entry_is_skipped_with_the_cursor_advanced(tmp_path: Path) -> None:
    from portsentinel.responder.service import Options, Responder

    r = Responder(Options(ROOT, tmp_path / "st", str(tmp_path / "s.sock"), backend="pyinotify",
                          wake=str(tmp_path / "w.sock"), decisions_jsonl=str(tmp_path / "d.jsonl")))
    reports: list[tuple[Any, str]] = []
    r.report = lambda ev, msg, **f: reports.append((ev, msg))  # type: ignore[method-assign]
    cfg = JailConfig(name="j", where="x", trusted_uids=())
    rt = JailRuntime(cfg, Boom(), Jail(cfg), PerMinuteCap(0), "src", False)
    r.engine = Engine([rt], NeverBan(), r.book, r.store)
    entries = [Entry({"PS_SRC": ip}, "", str(i), True) for i, ip in enumerate(("198.51.100.66", "198.51.100.67"))]
    r._apply("src", entries)
    assert r.store.cursor("src") == "1"
    assert [b.ip for b in r.store.bans()] == ["198.51.100.67"]
    (skipped,) = [m for ev, m in reports if ev is R.Event.FAILED]
    assert "skipped" in skipped and "poison" in skipped and "198.51.100.66" in skipped
    r.store.close()
    r.rearm.close()
    r.host.close()
    r.decisions.close()


def test_a_ban_that_raises_is_reported_and_the_others_run() -> None:
    runner = FakeRunner()
    reports: list[tuple[Any, str]] = []
    ex = Executor(ACTIONS, lambda ev, msg, **f: reports.append((ev, msg)), runner)
    ex.configure(JailConfig(name="j", where="x", actions=[ActionRef("route", {}, "x")]))
    poison = Ban("j", "198.51.100.1", 0.0, float("inf"))  # e.g. a corrupt row: OverflowError in its bantime
    ex.ban_many([poison, Ban("j", "198.51.100.2", 0.0, FOREVER)], now=0.0)
    assert any(ev is R.Event.FAILED and "198.51.100.1" in m for ev, m in reports)
    assert [c[-1] for c in runner.calls] == ["198.51.100.2/32"]


# ------------------------------------------------------------------------------------------ health checks
class NoTraps:
    def repair(self) -> list[str]:
        return []


@pytest.mark.parametrize("start_fails", [False, True])
def test_a_failed_actioncheck_reapplies_the_jails_bans(start_fails: bool) -> None:
    runner = FakeRunner()
    reports: list[tuple[Any, str]] = []
    ex = Executor(ACTIONS, lambda ev, msg, **f: reports.append((ev, msg)), runner)
    ex.configure(JailConfig(name="j", where="x", actions=[ActionRef("nftables", {}, "x")]))
    ex.start("j", now=0.0)
    book = BanBook()
    for i in range(1, 4):
        book.add(Ban("j", f"198.51.100.{i}", 0.0, FOREVER))
    h = Health(ex, book, NoTraps(), ex.report, interval=0.0)  # type: ignore[arg-type]
    h.run(["j"])
    assert h.reapplied_total == 0 and h.checks == 1  # the check passed: nothing re-applied
    runner.fail = {"@nft-check"} | ({"table"} if start_fails else set())
    runner.calls.clear()
    h.run(["j"])
    batches = [c for c in runner.calls if c[:2] == ["nft", "-f"]]
    if start_fails:  # actionstart failed again: no bans thrown at a missing table, the next check retries
        assert batches == [] and h.reapplied_total == 0
    else:
        assert len(batches) == 1 and h.reapplied_total == 1 and h.last_reapply is not None
        assert "3 ban(s) re-applied" in h.status()["last_reapply_detail"]
        assert any(ev is R.Event.BAN and "re-applied" in m for ev, m in reports)
