"""The bulk path of Executor.ban_many (responder.actions.bulkban): a plain set action's elements added without a
plan per ban are the very elements the per-ban plans make, a ban it cannot place goes the per-ban way (which
reports it), and a ban record is the one the per-ban path writes."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from portsentinel import record as R
from portsentinel.responder.actions.bulkban import ban_record
from portsentinel.responder.actions.executor import Executor
from portsentinel.responder.actions.variables import BanVars
from portsentinel.responder.adapters.nftbatch import NftBatch
from portsentinel.responder.adapters.runner import Result
from portsentinel.responder.config.jailconf import ActionRef, JailConfig
from portsentinel.responder.core.bans import FOREVER, Ban, src_fields
from tests.conftest import ROOT

NOW = 1_000_000.0


class Recorder:
    def __init__(self) -> None:
        self.scripts: list[str] = []

    def run(self, argv: Sequence[str], *, input: str | None = None, timeout: float | None = None) -> Result:
        if input is not None:
            self.scripts.append(input)
        return Result(tuple(argv), 0)


def _executor(runner: Recorder) -> tuple[Executor, list[tuple[Any, str, dict[str, str]]]]:
    reports: list[tuple[Any, str, dict[str, str]]] = []
    ex = Executor(ROOT / "actions.d", lambda ev, msg, **f: reports.append((ev, msg, f)), runner)
    ex.configure(JailConfig(name="fleet", where="x", enabled=True, filter="portsentinel-fleet",
                            actions=[ActionRef("nftables", {"name": "fleet"}, "x")]))
    ex.start("fleet", now=NOW)
    runner.scripts.clear()
    return ex, reports


BANS = [Ban("fleet", "198.51.100.7", NOW - 10, NOW + 3000.4), Ban("fleet", "198.51.100.8", NOW, FOREVER),
        Ban("fleet", "2001:db8::7", NOW, NOW + 59.6), Ban("fleet", "2001:db8:1:2::/64", NOW, NOW + 600),
        Ban("fleet", "192.0.2.0/24", NOW, NOW + 86400), Ban("fleet", "198.51.100.9", NOW - 100, NOW - 5),
        Ban("fleet", "203.0.113.1", NOW, NOW + 0.2, info={"src": "203.0.113.1", "note": "n"})]


def _per_ban_script(ex: Executor, runner: Recorder, bans: list[Ban]) -> str:
    """The nft script of the bans' elements as the per-ban plans make them."""
    (action,) = ex.actions["fleet"]
    expected = NftBatch(runner, table="portsentinel")
    for ban in bans:
        plan = action.plan("actionban", BanVars.of(ban, NOW, remaining=True))
        expected.add(plan.set, plan.element, plan.timeout)  # type: ignore[union-attr]
    return expected.script()


def test_the_elements_are_those_of_the_per_ban_plans() -> None:
    runner = Recorder()
    ex, _ = _executor(runner)
    applied = ex.ban_many(list(BANS), now=NOW)
    assert [names for _, names in applied] == [["nftables"]] * len(BANS)
    assert runner.scripts == [_per_ban_script(ex, runner, BANS)]


def test_a_ban_the_fast_path_cannot_place_is_reported_by_the_per_ban_path() -> None:
    runner = Recorder()
    ex, reports = _executor(runner)
    bad = Ban("fleet", "198.51.100.10", NOW, math.inf)
    applied = ex.ban_many([BANS[0], bad], now=NOW)
    assert [b.ip for b, _ in applied] == ["198.51.100.7"]
    failed = [f for ev, _, f in reports if ev is R.Event.FAILED]
    assert [f["PS_SRC"] for f in failed] == ["198.51.100.10"] and "bantime" in failed[0]["PS_STDERR"]
    assert "198.51.100.10" not in "".join(runner.scripts)


def _per_ban_record(ban: Ban, names: list[str]) -> tuple[str, dict[str, str]]:
    """The ban record as the per-ban path wrote it before the bulk path (its empty fields left out)."""
    bantime = "forever" if ban.expires == FOREVER else f"{int(round(ban.bantime))}s"
    note = ban.info.get("note", "")
    message = (f"jail {ban.jail}: banned {ban.ip} for {bantime} (offence {ban.count}, {ban.failures} "
               f"failure(s)) by {', '.join(names) or 'no action'}"
               + (f" (record from {ban.info['src']})" if ban.info.get("src") else "") + (f"; {note}" if note else ""))
    fields = dict(PS_JAIL=ban.jail, **src_fields(ban.ip, ban.info), PS_ACTION=",".join(names), PS_DETAIL=note,
                  PS_BANTIME=str(-1 if ban.expires == FOREVER else int(round(ban.bantime))),
                  PS_PORT=ban.info.get("port", ""), PS_PROTO=ban.info.get("proto", ""),
                  PS_SCAN=ban.info.get("scan", ""), PS_HITS=str(ban.failures))
    return message, {k: v for k, v in fields.items() if v != ""}


def test_a_ban_record_is_the_per_ban_paths() -> None:
    extra = [Ban("scan", "203.0.113.5", NOW, NOW + 60, 3, 7, {"port": "22", "proto": "tcp", "scan": "syn"})]
    for ban in BANS + extra:
        for names in ([], ["nftables"], ["nftables", "mail"]):
            assert ban_record(ban, names) == _per_ban_record(ban, names)


def test_add_new_takes_plain_distinct_elements_at_once_and_merges_the_rest() -> None:
    """NftBatch.add_new: a set's distinct plain elements go in as they are; a repeated element, a second call for
    the same set, or elements after other pending ops go through add (the longest timeout kept, text parsed)."""
    runner = Recorder()
    nb = NftBatch(runner)
    nb.add_new("s_v4", ["192.0.2.1", "192.0.2.2"], [10, None])
    nb.add_new("s_v6", ["2001:db8::1"], [5])
    nb.add_new("s_v4", ["192.0.2.1", "192.0.2.3"], [99, 3])  # the same set again: merged by add
    assert nb.commit().ok
    assert runner.scripts == ["add element inet portsentinel s_v4 { 192.0.2.1 timeout 99s, 192.0.2.2, "
                              "192.0.2.3 timeout 3s }\nadd element inet portsentinel s_v6 { 2001:db8::1 timeout "
                              "5s }\n"]
    runner.scripts.clear()
    nb.add_new("s_v4", ["192.0.2.7", "192.0.2.7"], [1, 50])  # repeated: one element, the longest timeout
    nb.commit()
    assert runner.scripts == ["add element inet portsentinel s_v4 { 192.0.2.7 timeout 50s }\n"]


def test_ban_many_later_applies_on_the_worker_what_ban_many_applies() -> None:
    """Executor.ban_many_later: the same script, committed on the worker thread (a fresh executor each), the same
    bans and actions returned once waited for, no ban record written (the keeper writes them after the commit);
    a refused element is reported as ban_many reports it."""
    import threading

    runner, later_runner = Recorder(), Recorder()
    ex, _ = _executor(runner)
    applied = ex.ban_many(list(BANS), now=NOW, report=False)
    ex2, reports = _executor(later_runner)
    threads: list[str] = []
    original = later_runner.run

    def run(argv: Sequence[str], *, input: str | None = None, timeout: float | None = None) -> Result:
        threads.append(threading.current_thread().name)
        return original(argv, input=input, timeout=timeout)

    later_runner.run = run  # type: ignore[method-assign]
    wait = ex2.ban_many_later(list(BANS), now=NOW)
    assert [(b.ip, names) for b, names in wait()] == [(b.ip, names) for b, names in applied]
    assert later_runner.scripts == runner.scripts and threads and all(t.startswith("portsentinel-nft") for t in threads)
    assert reports == []
    ex2.early.close()

    class Refusing(Recorder):
        def run(self, argv: Sequence[str], *, input: str | None = None, timeout: float | None = None) -> Result:
            bad = input is not None and "198.51.100.7" in input
            return Result(tuple(argv), 1 if bad else 0, stderr="Error: refused" if bad else "")

    ex3, reports3 = _executor(Refusing())
    got = ex3.ban_many_later(list(BANS), now=NOW)()
    assert dict((b.ip, names) for b, names in got)["198.51.100.7"] == []
    assert any(f.get("PS_SRC") == "198.51.100.7" and ev is R.Event.FAILED for ev, _, f in reports3)
    ex3.early.close()


@given(st.lists(st.tuples(st.integers(1, 2**32 - 2), st.floats(-10**6, 10**8)),
                min_size=64, max_size=150, unique_by=lambda t: t[0]), st.booleans())
@settings(max_examples=60, deadline=None)
def test_many_ipv4_bans_at_once_are_the_per_ban_plans_elements(items: list[tuple[int, float]], forever: bool) -> None:
    """The list-at-a-time path (64 IPv4 addresses or more, bulkban._all_v4) and, when a ban is for ever, the
    loop: either way the script of the per-ban plans."""
    import ipaddress

    runner = Recorder()
    ex, _ = _executor(runner)
    bans = [Ban("fleet", str(ipaddress.IPv4Address(a)), NOW - 5,
                FOREVER if forever and i == len(items) // 2 else NOW + left) for i, (a, left) in enumerate(items)]
    ex.ban_many(list(bans), now=NOW)
    assert runner.scripts == [_per_ban_script(ex, runner, bans)]
