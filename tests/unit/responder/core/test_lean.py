"""responder.core.lean against Engine.entry: for any batch, the same bans, decisions and counters.

Two engines built alike (the real portsentinel filter, the same bans already in force, the same offence counts)
decide the same batch, one entry by entry through Engine.entry (the service's long way), the other through
lean.decide with Engine.entry as its long way; everything they leave behind must be equal.
"""

from __future__ import annotations

import ipaddress
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from portsentinel import record as R
from portsentinel.responder.config.jailconf import JailConfig
from portsentinel.responder.core import lean
from portsentinel.responder.core.bans import Ban, BanBook
from portsentinel.responder.core.engine import Decision, Engine, JailRuntime
from portsentinel.responder.core.guard import NeverBan, PerMinuteCap
from portsentinel.responder.core.jail import Failure, Jail
from portsentinel.responder.core.sources import Entry
from portsentinel.responder.filter.filters import load_filter

FILTERS = Path(__file__).resolve().parents[4] / "filter.d"
SOURCE = "file:/x/alerts.jsonl"
NOW = 1_000_000.0

#: Sources: new addresses, ones already banned (alone, or inside a banned network), never-ban ones (own,
#: gateway, ignoreip, loopback), IPv6, a v4-mapped one, text that is no address.
_SRCS = ["203.0.113.5", "203.0.113.6", "203.0.113.7", "198.18.0.1", "198.18.0.2", "198.51.100.9", "192.0.2.1",
         "192.0.2.254", "127.0.0.1", "0.0.0.0", "10.9.8.7", "2001:db8::1", "2001:db8:0:1::5", "::ffff:198.18.0.3",
         "fe80::1%eth0", "not-an-ip", "", "203.0.113.005"]
_PORTS = ["1", "22", "0", "", "1024", "1025", "65535", "70000", "01", "x"]


class _Offences:
    def __init__(self, counts: dict[tuple[str, str], int], many: bool) -> None:
        self.counts = counts
        if many:
            self.offences_many = self._many

    def offences(self, jail: str, ip: str) -> int:
        return self.counts.get((jail, ip), 0)

    def _many(self, jail: str, ips: Any) -> dict[str, int]:
        return {ip: n for (j, ip), n in self.counts.items() if j == jail and ip in set(ips)}


@st.composite
def _entry(draw: st.DrawFn) -> Entry:
    kind = draw(st.sampled_from(["record"] * 8 + ["error", "line"]))
    if kind == "error":
        return Entry({}, "", "c", False, "x.jsonl:3: PS_SRC: bad")
    if kind == "line":
        return Entry({}, "attackalert: TCP SYN/Normal scan from host: 203.0.113.9", "c", True)
    fields = {R.F_IDENT: draw(st.sampled_from(["portsentinel-detector"] * 5 + ["sshd"])),
              R.F_EVENT: draw(st.sampled_from(["scan"] * 5 + ["start"])),
              R.F_SRC: draw(st.sampled_from(_SRCS)),
              R.F_MESSAGE: draw(st.sampled_from(["attackalert: TCP SYN/Normal scan", "x" * 400, ""]))}
    for name, values in ((R.F_PORT, _PORTS), (R.F_PROTO, ["tcp", "udp", ""]), (R.F_SCAN, ["syn", "fin", ""]),
                         (R.F_MODE, ["stcp", "audp", ""]), (R.F_VERIFIED, ["0", "1", "yes"]), ("_UID", ["0", "1000"])):
        if draw(st.booleans()):
            fields[name] = draw(st.sampled_from(values))
    if draw(st.booleans()):
        del fields[R.F_SRC]
    return Entry(fields, "", "c", draw(st.sampled_from([True] * 4 + [False])))


@st.composite
def _case(draw: st.DrawFn) -> dict[str, Any]:
    return {"entries": draw(st.lists(_entry(), min_size=1, max_size=40)),
            "bantime": draw(st.sampled_from([60, 3600, -1])),
            "increment": draw(st.booleans()),
            "share": draw(st.booleans()),
            "cap": draw(st.sampled_from([0, 0, 3, 20])),
            "journal": draw(st.booleans()),
            "ignoreself": draw(st.booleans()),
            "banned": draw(st.lists(st.sampled_from(["203.0.113.6", "203.0.113.0/24", "198.18.0.2"]), max_size=2)),
            "offences": draw(st.dictionaries(st.sampled_from(_SRCS[:6]), st.integers(1, 5), max_size=3)),
            "counted": draw(st.lists(st.sampled_from(_SRCS[:5]), max_size=2)),
            "many": draw(st.booleans())}


def _engine(case: dict[str, Any]) -> tuple[Engine, JailRuntime]:
    cfg = JailConfig(name="scan", where="x", enabled=True, filter="portsentinel", maxretry=1,
                     bantime=float(case["bantime"]))
    cfg.bantime_increment = case["increment"]
    cfg.bantime_factor = 2.0
    cfg.bantime_maxtime = 86400.0
    cfg.share = case["share"]
    cfg.maxbans_per_minute = case["cap"]
    cfg.ignoreself = case["ignoreself"]
    cfg.ignoreip = (ipaddress.ip_network("198.51.100.0/24"),)
    rt = JailRuntime(cfg, load_filter(FILTERS, "portsentinel", {}), Jail(cfg), PerMinuteCap(cfg.maxbans_per_minute),
                     SOURCE, case["journal"])
    offences = _Offences({("scan", ip): n for ip, n in case["offences"].items()}, case["many"])
    eng = Engine([rt], NeverBan(own=["192.0.2.1"], gateways=["192.0.2.254"]), BanBook(), offences)
    for target in case["banned"]:
        eng.book.add(Ban("scan", target, NOW - 10, NOW + 500))
    for host in case["counted"]:  # failures the jail still counts (its maxretry was higher before a reload)
        rt.jail._seen[host] = deque([Failure(host, NOW - 5, match="earlier")])  # noqa: SLF001
    return eng, rt


def _ban(b: Ban) -> tuple[Any, ...]:
    return (b.jail, b.ip, b.banned_at, b.expires, b.count, b.failures, b.info, b.matches)


def _other(d: Decision) -> tuple[Any, ...]:
    return (d.kind, d.jail, d.ip, d.reason, d.fields, d.extra)


def _state(eng: Engine, rt: JailRuntime) -> tuple[Any, ...]:
    return (sorted((k, _ban(b)) for k, b in eng.book.active.items()), rt.bans_total, rt.ignored_total,
            rt.jail.failures_total, rt.jail.rejected_unverified, rt.cap.refused, len(rt.cap._times),  # noqa: SLF001
            eng._counts, {h: list(q) for h, q in rt.jail._seen.items()})  # noqa: SLF001


@settings(max_examples=300, deadline=None)
@given(_case())
def test_lean_decides_every_batch_as_the_engine_does(case: dict[str, Any]) -> None:
    _both_ways(_engine, case, SOURCE, case["entries"])


def _both_ways(make: Callable[[dict[str, Any]], tuple[Engine, JailRuntime]], case: dict[str, Any], source: str,
               entries: list[Entry]) -> None:
    """Two engines made alike by ``make``, one taking the batch the long way, the other the short way: the same
    decisions in the same order, and the same state left behind."""
    long_eng, long_rt = make(case)
    expected = _long_way(long_eng, source, entries)
    eng, rt = make(case)
    assert lean.jail_of(eng, source) is rt
    assert _short_way(eng, rt, source, entries) == expected
    assert _state(eng, rt) == _state(long_eng, long_rt)


def _long_way(eng: Engine, source: str, entries: list[Entry]) -> tuple[list[Any], list[Any]]:
    """The batch through Engine.entry, entry by entry (the service's long way): its bans (each with those it
    replaces) and its other decisions (each with the bans it lifts), in order."""
    eng.prefetch(source, entries)
    bans: list[Any] = []
    other: list[Any] = []
    for e in entries:
        for d in eng.entry(source, e, NOW):
            if d.kind == "ban" and d.ban is not None:
                bans.append((_ban(d.ban), [_ban(b) for b in d.replaces]))
            else:
                other.append((*_other(d), [_ban(b) for b in d.lifts]))
    return bans, other


def _short_way(eng: Engine, rt: JailRuntime, source: str, entries: list[Entry]) -> tuple[list[Any], list[Any]]:
    """The same batch through lean.decide, Engine.entry as its long way: the same two lists."""
    eng.prefetch(source, entries)
    bans: list[Ban] = []
    replaced: dict[int, list[Any]] = {}
    other: list[Any] = []

    def slow(e: Entry) -> None:
        for d in eng.entry(source, e, NOW):
            if d.kind == "ban" and d.ban is not None:
                bans.append(d.ban)
                replaced[id(d.ban)] = [_ban(b) for b in d.replaces]
            else:
                other.append((*_other(d), [_ban(b) for b in d.lifts]))

    fast = lean.decide(eng, rt, source, entries, NOW, bans, slow)
    assert all(b in bans and f in [e.fields for e in entries] for b, f in fast)  # (its bans, with their records)
    return [(_ban(b), replaced.get(id(b), [])) for b in bans], other


def test_jail_of_only_for_a_jail_banning_at_the_first_record() -> None:
    case = {"bantime": 60, "increment": False, "share": False, "cap": 0, "journal": False, "ignoreself": True,
            "banned": [], "offences": {}, "many": False, "counted": []}
    eng, rt = _engine(case)
    assert lean.jail_of(eng, SOURCE) is rt and lean.jail_of(eng, "journal") is None
    for change in ({"maxretry": 2}, {"verified_only": True}, {"ban_prefix_v4": 24}):
        eng, rt = _engine(case)
        for k, v in change.items():
            setattr(rt.cfg, k, v)
        assert lean.jail_of(eng, SOURCE) is None, change
    eng, rt = _engine(case)
    assert lean.jail_of(eng, SOURCE, lean.MIN_BATCH) is rt and lean.jail_of(eng, SOURCE, lean.MIN_BATCH - 1) is None


# ------------------------------------------------------------------------------------------------ the fleet jail
FLEET_SOURCE = "file:/x/remote.jsonl"
_REMOTE_SRCS = ["100.64.0.1", "100.64.0.2", "100.64.0.3", "198.51.100.9", "192.0.2.1", "127.0.0.1", "2001:db8::7",
                "2001:db8:1::", "::ffff:100.64.0.9", "nope", ""]


@st.composite
def _remote_entry(draw: st.DrawFn) -> Entry:
    if draw(st.integers(0, 15)) == 0:
        return Entry({}, "", "c", False, "remote.jsonl:3: PS_SRC: bad")
    src = draw(st.sampled_from(_REMOTE_SRCS))
    fields = {R.F_IDENT: draw(st.sampled_from(["portsentinel-fleet"] * 6 + ["sshd"])),
              R.F_EVENT: draw(st.sampled_from(["ban"] * 6 + ["unban", "scan"])),
              R.F_SRC: src, R.F_MESSAGE: f"fleet: {src} banned",
              R.F_ORIGIN: draw(st.sampled_from(["host-a"] * 4 + ["host-b", "bad host", ""])),
              R.F_ORIGIN_JAIL: draw(st.sampled_from(["portsentinel"] * 4 + ["_unban", "x y"])),
              R.F_UNTIL: draw(st.sampled_from([f"{NOW + 3000:.3f}", f"{NOW + 200:.3f}", f"{NOW - 5:.3f}", "soon",
                                               "nan", f"{NOW + 10 ** 7:.3f}"]))}
    for name, values in ((R.F_ORIGINS, ["1", "2", "3", "0", "x"]), (R.F_OFFENCE, ["1", "4", "-1"]),
                         (R.F_SCAN, ["syn", ""]), (R.F_VERIFIED, ["0", "1"]), (R.F_FLEET, ["1", "0"])):
        if draw(st.integers(0, 3)) == 0:
            fields[name] = draw(st.sampled_from(values))
    if draw(st.integers(0, 3)) == 0:  # a network ban (its first address as PS_SRC), or one that does not hold it
        fields[R.F_SRC], fields[R.F_SRC_NET] = draw(st.sampled_from(
            [("100.64.0.0", "100.64.0.0/24"), ("2001:db8:1::", "2001:db8:1::/64"), ("198.51.100.0", "198.51.0.0/16"),
             ("100.64.0.1", "100.64.0.0/24"), ("100.64.0.1", "100.64.0.1")]))
    return Entry(fields, "", "c", draw(st.sampled_from([True] * 6 + [False])))


def _fleet_engine(case: dict[str, Any]) -> tuple[Engine, JailRuntime]:
    cfg = JailConfig(name="fleet", where="x", enabled=True, filter="portsentinel-fleet", maxretry=1, bantime=600.0)
    cfg.bantime_maxtime = 3600.0
    cfg.bantime_fleetmultipliers = (1.0, 2.0, 4.0)
    cfg.maxbans_per_minute = case["cap"]
    cfg.ignoreip = (ipaddress.ip_network("198.51.100.0/24"),)
    filt = load_filter(FILTERS, "portsentinel-fleet", {})
    if not case["stock"]:  # a local override of the filter: one origin's bans (lean then asks it about each line)
        filt.journalmatch = [{R.F_IDENT: R.FLEET_IDENTIFIER, R.F_EVENT: "ban", R.F_ORIGIN: "host-a"}]
    rt = JailRuntime(cfg, filt, Jail(cfg), PerMinuteCap(cfg.maxbans_per_minute), FLEET_SOURCE, False)
    offences = _Offences({("fleet", ip): n for ip, n in case["offences"].items()}, case["many"])
    eng = Engine([rt], NeverBan(own=["192.0.2.1"], gateways=["192.0.2.254"]), BanBook(), offences)
    for target, left in case["banned"]:
        eng.book.add(Ban("fleet", target, NOW - 10, NOW + left, info={"origin": "host-a"}))
    return eng, rt


@settings(max_examples=300, deadline=None)
@given(st.lists(_remote_entry(), min_size=1, max_size=40), st.sampled_from([0, 0, 3]),
       st.lists(st.tuples(st.sampled_from(["100.64.0.2", "100.64.0.0/24", "2001:db8:1::/64"]),
                          st.sampled_from([100, 5000])), max_size=2),
       st.dictionaries(st.sampled_from(_REMOTE_SRCS[:4]), st.integers(1, 5), max_size=3), st.booleans(),
       st.booleans())
def test_lean_decides_every_fleet_batch_as_the_engine_does(entries: list[Entry], cap: int,
                                                           banned: list[tuple[str, int]], offences: dict[str, int],
                                                           many: bool, stock: bool) -> None:
    case = {"cap": cap, "banned": banned, "offences": offences, "many": many, "stock": stock}
    _both_ways(_fleet_engine, case, FLEET_SOURCE, entries)
