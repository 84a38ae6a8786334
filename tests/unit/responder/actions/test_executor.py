"""The executor with a fake runner: ordering, nft batching, failure reports and retries (no kernel)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from portsentinel import record as R
from portsentinel.responder.actions.executor import Executor
from portsentinel.responder.adapters.runner import Result
from portsentinel.responder.config.jailconf import ActionRef, JailConfig
from portsentinel.responder.core.bans import Ban
from tests.conftest import ROOT


class FakeRunner:
    def __init__(self, fail: set[str] | None = None) -> None:
        self.calls: list[tuple[list[str], str | None]] = []
        self.fail = fail or set()

    def run(self, argv: Sequence[str], *, input: str | None = None, timeout: float | None = None) -> Result:
        self.calls.append((list(argv), input))
        bad = any(word in self.fail for word in argv)
        return Result(tuple(argv), 1 if bad else 0, stderr="boom" if bad else "")


def _executor(actions: list[ActionRef], runner: FakeRunner) -> tuple[Executor, list[tuple[Any, str, dict[str, str]]]]:
    reports: list[tuple[Any, str, dict[str, str]]] = []
    ex = Executor(ROOT / "actions.d", lambda ev, msg, **f: reports.append((ev, msg, f)), runner)
    ex.configure(JailConfig(name="scan", where="x", enabled=True, filter="portsentinel", actions=actions))
    return ex, reports


def test_nft_bans_are_one_transaction() -> None:
    runner = FakeRunner()
    ex, reports = _executor([ActionRef("nftables", {"name": "scan"}, "x")], runner)
    ex.start("scan", now=1000.0)
    started = len(runner.calls)
    bans = [Ban("scan", f"198.51.100.{i}", 1000.0, 1060.0) for i in range(1, 101)]
    bans.append(Ban("scan", "2001:db8::5", 1000.0, -1))
    ex.ban_many(bans, now=1000.0)
    calls = runner.calls[started:]
    assert len(calls) == 1 and calls[0][0] == ["nft", "-f", "-"]
    script = calls[0][1] or ""
    assert "198.51.100.100 timeout" in script and "scan_v4" in script and "2001:db8::5" in script
    assert sum(1 for ev, _, _ in reports if ev is R.Event.BAN) == 101


def test_order_and_failure_is_retried_without_stopping_others() -> None:
    runner = FakeRunner(fail={"blackhole"})
    actions = [ActionRef("route", {}, "x"), ActionRef("script", {"command": "/bin/true $TARGET$", "first": "yes"}, "x")]
    ex, reports = _executor(actions, runner)
    ex.ban_many([Ban("scan", "203.0.113.9", 1000.0, 1060.0)], now=1000.0)
    argvs = [c[0] for c in runner.calls]
    assert argvs[0][:2] == ["@script", "/bin/true"] and argvs[0][2] == "203.0.113.9"  # first = yes runs first
    assert argvs[1][:4] == ["ip", "-4", "route", "replace"]
    failed = [f for ev, _, f in reports if ev is R.Event.FAILED]
    assert failed and failed[0]["PS_ACTION"] == "route" and failed[0]["PS_STDERR"] == "boom"
    (ban,) = [f for ev, _, f in reports if ev is R.Event.BAN]
    assert ban["PS_ACTION"] == "script"  # the other action still ran
    assert ex.next_retry() is not None
    runner.fail.clear()
    ex.retry_due(1000.0 + 1.5)  # time passes: the first retry is due after a second
    assert runner.calls[-1][0][:4] == ["ip", "-4", "route", "replace"]
    assert "succeeded on retry 1" in reports[-1][1]


def test_hostile_values_never_reach_argv() -> None:
    runner = FakeRunner()
    ex, reports = _executor([ActionRef("route", {}, "x")], runner)
    ex.ban_many([Ban("scan", "203.0.113.9", 1000.0, 1060.0, info={"scan": "syn; rm -rf /", "proto": "tcp"})],
                now=1000.0)
    assert runner.calls == []  # the bad variable is refused before anything runs
    assert any(ev is R.Event.FAILED for ev, _, _ in reports)


def test_ban_vars_carry_mode_and_matches() -> None:
    """$MODE$ (actions.d/script.conf) and {{ matches }} reach the templates (docs/actions.md lists them)."""
    from portsentinel.responder.actions.variables import BanVars
    from portsentinel.responder.core.bans import Ban

    ban = Ban("j", "192.0.2.7", 100.0, 700.0, info={"port": "23", "proto": "tcp", "scan": "syn", "mode": "stcp"},
              matches="attackalert: TCP SYN/Normal scan from host: 192.0.2.7")
    out = BanVars.of(ban, 100.0).context()
    assert (out["mode"], out["port"], out["scan"], out["bantime"]) == ("stcp", 23, "syn", 600)
    assert str(out["matches"]).startswith("attackalert: TCP SYN")
    restored = BanVars.of(Ban("j", "192.0.2.7", 100.0, 700.0, info={"port": "23"}), 100.0).context()
    assert "matches" not in restored and "mode" not in restored  # from the store: no matches


def test_a_failed_batch_falls_back_per_element_and_nothing_is_lost() -> None:
    """The bulk path: one transaction for every element; when the kernel refuses it, its halves, a failing half
    split again down to the element, so the one bad element fails (reported, retried) and every other ban is
    still in force and reported."""
    class Refusing(FakeRunner):
        def run(self, argv: Sequence[str], *, input: str | None = None, timeout: float | None = None) -> Result:
            self.calls.append((list(argv), input))
            bad = input is not None and "198.51.100.13 timeout" in input  # a batch holding it fails as a whole
            return Result(tuple(argv), 1 if bad else 0, stderr="Error: Could not process rule" if bad else "")

    runner = Refusing()
    ex, reports = _executor([ActionRef("nftables", {"name": "scan"}, "x")], runner)
    ex.start("scan", now=1000.0)
    started = len(runner.calls)
    bans = [Ban("scan", f"198.51.100.{i}", 1000.0, 1600.0) for i in range(1, 201)]
    applied = ex.ban_many(bans, now=1000.0)
    scripts = [c[1] or "" for c in runner.calls[started:]]
    # the batch, then two halves per level down to the element (8 levels for 200), not 200 single runs
    assert len(scripts) == 1 + 2 * 7
    assert any(s.count("timeout") == 1 and "198.51.100.13 " in s for s in scripts)  # it, alone, at the end
    held = {b.ip for b, names in applied if names == ["nftables"]}
    assert held == {b.ip for b in bans} - {"198.51.100.13"}
    failed = [f for ev, _, f in reports if ev is R.Event.FAILED]
    assert [f["PS_SRC"] for f in failed] == ["198.51.100.13"] and ex.next_retry() == 1001.0
    banned = [f["PS_SRC"] for ev, _, f in reports if ev is R.Event.BAN]
    assert sorted(banned) == sorted(b.ip for b in bans)  # every ban has its record (one with no action)
