"""The restore's set elements (responder.actions.restore): chunked transactions committed by a worker thread, each
element in its family's address or network set, a refused element reported with its ban, a crash in the worker
raised on the caller's thread (no kernel: a fake runner)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import pytest

from portsentinel import record as R
from portsentinel.responder.actions.executor import Executor
from portsentinel.responder.actions.restore import Restorer, plain
from portsentinel.responder.adapters.runner import Result
from portsentinel.responder.config.jailconf import ActionRef, JailConfig
from portsentinel.responder.core.bans import FOREVER, Ban
from tests.conftest import ROOT

NOW = 1000.0


class Runner:
    """Keeps each nft script and the thread that ran it; refuses a script holding ``bad``; raises on ``crash``."""

    def __init__(self, bad: str = "", crash: bool = False) -> None:
        self.scripts: list[tuple[str, str]] = []
        self.bad = bad
        self.crash = crash

    def run(self, argv: Sequence[str], *, input: str | None = None, timeout: float | None = None) -> Result:
        if input is not None:
            if self.crash:
                raise SystemExit("killed during the restore")
            self.scripts.append((threading.current_thread().name, input))
            if self.bad and self.bad in input:
                return Result(tuple(argv), 1, stderr="Error: refused")
        return Result(tuple(argv), 0)


def _executor(runner: Runner, actions: list[ActionRef]) -> tuple[Executor, list[tuple[Any, str]]]:
    reports: list[tuple[Any, str]] = []
    ex = Executor(ROOT / "actions.d", lambda ev, msg, **f: reports.append((ev, msg)), runner)
    ex.configure(JailConfig(name="j", where="x", enabled=True, filter="portsentinel", actions=actions))
    return ex, reports


def _elements(scripts: list[tuple[str, str]], set_name: str) -> list[str]:
    out = []
    for _, text in scripts:
        for line in text.splitlines():
            head = f"add element inet portsentinel {set_name} {{ "
            if line.startswith(head):
                out += line[len(head):-2].split(", ")
    return out


def test_chunks_go_to_the_worker_each_element_to_its_set() -> None:
    runner = Runner()
    ex, reports = _executor(runner, [ActionRef("nftables", {"name": "s"}, "x")])
    r = Restorer(ex, ["j"], NOW, chunk=40)
    for k in range(5):  # five reads of 30 rows: the first transaction at 10 (a quarter), then at 40 or more
        r.add([Ban("j", f"198.51.100.{30 * k + i}", 0.0, NOW + 100 + i) for i in range(30)])
    r.add([Ban("j", "2001:db8::/64", 0.0, FOREVER), Ban("j", "2001:db8:1::7", 0.0, NOW + 9.6),
           Ban("j", "192.0.2.0/24", 0.0, NOW + 50), Ban("other", "192.0.2.9", 0.0, NOW + 50)])
    r.finish()
    assert {name for name, _ in runner.scripts} == {"portsentinel-restore"}
    assert r.transactions == len(runner.scripts) >= 3 and r.elements == 153
    v4 = _elements(runner.scripts, "s_v4")
    assert sorted(v4) == sorted(f"198.51.100.{30 * k + i} timeout {100 + i + 1}s" for k in range(5) for i in range(30))
    assert _elements(runner.scripts, "s_v6net") == ["2001:db8::/64"]
    assert _elements(runner.scripts, "s_v6") == ["2001:db8:1::7 timeout 11s"]
    assert _elements(runner.scripts, "s_v4net") == ["192.0.2.0/24 timeout 51s"]
    assert "192.0.2.9" not in "".join(t for _, t in runner.scripts)  # not a jail of this restore
    assert not [m for ev, m in reports if ev is R.Event.FAILED]


def test_a_refused_element_is_reported_with_its_ban() -> None:
    runner = Runner(bad="192.0.2.66")
    ex, reports = _executor(runner, [ActionRef("nftables", {"name": "s"}, "x")])
    r = Restorer(ex, ["j"], NOW)
    r.add([Ban("j", f"192.0.2.{i}", 0.0, NOW + 60) for i in range(1, 100)])
    r.finish()
    failed = [m for ev, m in reports if ev is R.Event.FAILED]
    assert len(failed) == 1 and "actionban 192.0.2.66 failed" in failed[0] and "refused" in failed[0]
    # halves retried: every other element went in
    assert len(set(_elements([s for s in runner.scripts if "192.0.2.66" not in s[1]], "s_v4"))) == 98


def test_a_crash_in_the_worker_is_raised_by_finish() -> None:
    ex, _ = _executor(Runner(crash=True), [ActionRef("nftables", {"name": "s"}, "x")])
    r = Restorer(ex, ["j"], NOW, chunk=8)
    for k in range(6):  # more chunks than the queue holds: the caller never blocks on a dead worker
        r.add([Ban("j", f"198.51.100.{10 * k + i}", 0.0, NOW + 60) for i in range(10)])
    with pytest.raises(SystemExit):
        r.finish()


def test_only_set_actions_named_by_family_and_kind_are_plain() -> None:
    ex, _ = _executor(Runner(), [ActionRef("nftables", {}, "x"), ActionRef("route", {}, "x"),
                                 ActionRef("kernel-trap", {}, "x")])
    assert sorted((a.name, plain(a)) for a in ex.actions["j"]) == [("kernel-trap", True), ("nftables", True),
                                                                    ("route", False)]


def test_abort_stops_the_worker_without_reports() -> None:
    runner = Runner()
    ex, reports = _executor(runner, [ActionRef("nftables", {"name": "s"}, "x")])
    r = Restorer(ex, ["j"], NOW, chunk=8)
    r.add([Ban("j", f"198.51.100.{i}", 0.0, NOW + 60) for i in range(10)])
    r.abort()
    assert not [t for t in threading.enumerate() if t.name == "portsentinel-restore"] and not reports
