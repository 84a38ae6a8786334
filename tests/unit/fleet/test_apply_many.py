"""Applier.apply_many (the catch-up's loop) against Applier.entry one at a time: the same lines, refusals and
state for a mix of every kind of entry, in order."""

from __future__ import annotations

import json
import random

from portsentinel.fleet import codec as C
from portsentinel.fleet.applier import Applied, Applier
from portsentinel.fleet.config import FleetConfig
from portsentinel.fleet.consumer import Entry
from portsentinel.fleet.keys import make_key

NOW = 1_800_000_000.0
LIVE_AGE = 60.0


def cfg() -> FleetConfig:
    return FleetConfig(host="me", origins=frozenset({"a", "b", "c"}), origin_rate=5, origin_max=30,
                       maxtime=86400.0)


def ban(host: str, addr: str, *, until: float = NOW + 600, at: float = NOW - 5, jail: str = "portsentinel",
        value_jail: str | None = None, value_addr: str | None = None, scan: str = "syn", offence: int = 1) -> bytes:
    return json.dumps({"v": 1, "addr": value_addr or addr, "jail": value_jail or jail, "until": until, "scan": scan,
                       "verified": 0, "offence": offence, "at": at}, separators=(",", ":")).encode()


def mixed(seed: int) -> list[Entry]:
    rnd = random.Random(seed)
    out: list[Entry] = []
    for i in range(400):
        host = rnd.choice(["a", "b", "c", "me", "evil"])
        addr = f"198.51.100.{rnd.randrange(40)}" if rnd.random() < 0.9 else f"2001:db8::{rnd.randrange(1, 9):x}"
        jail = rnd.choice(["portsentinel", "sshd"])
        stamp = NOW - rnd.choice([1.0, 3600.0])  # live or catch-up
        kind = rnd.random()
        key = make_key(host, jail, addr)
        if kind < 0.55:
            value = ban(host, addr, jail=jail, until=NOW + rnd.choice([600, 1200]), at=NOW - rnd.randrange(100))
        elif kind < 0.6:
            value = ban(host, addr, jail=jail, until=NOW - 1)  # run out
        elif kind < 0.63:
            value = ban(host, addr, jail=jail, until=NOW + 10 * 86400)  # beyond maxtime
        elif kind < 0.66:
            value = ban(host, addr, jail=jail, value_addr="192.0.2.1")  # not the key's address
        elif kind < 0.68:
            value = ban(host, addr, jail=jail, value_jail="other")
        elif kind < 0.7:
            value = ban(host, addr, jail=jail, scan="bogus")
        elif kind < 0.72:
            value = ban(host, addr, jail=jail, at=NOW + 1000)  # in the future
        elif kind < 0.74:
            value = ban(host, addr, jail=jail, offence=C.MAX_OFFENCE + 1)
        elif kind < 0.76:
            value = json.dumps(json.loads(ban(host, addr, jail=jail))).encode()  # blanks: the general parser
        elif kind < 0.86:
            out.append(Entry(key, rnd.choice(["DEL", "PURGE"]), b"", i + 1, 0, stamp))
            continue
        elif kind < 0.92:
            unban = C.encode_unban(C.Unban(addr, NOW - rnd.randrange(50), NOW + 300))
            out.append(Entry(make_key(host, "_unban", addr), "PUT", unban, i + 1, 0, stamp))
            continue
        elif kind < 0.96:
            key = f"{host}.{jail}.198-51-100-007"  # not canonical
            value = ban(host, "198.51.100.7", jail=jail)
        else:
            value = b"not json"
        out.append(Entry(key, "PUT", value, i + 1, 0, stamp))
    return out


def one_by_one(ap: Applier, entries: list[Entry]) -> Applied:
    out = Applied([], [], 0, [], [])
    for e in entries:
        got = ap.entry(e.key, e.op, e.value, NOW, live=NOW - e.stamp < LIVE_AGE)
        if got.line is not None:
            out.lines.append(got.line)
        elif got.refused:
            out.refused.append((got.origin, got.refused))
        elif got.expired:
            out.expired += 1
        out.delete_own += got.delete_own
    return out


def state(ap: Applier) -> tuple[object, ...]:
    return (ap.bans, ap._by_addr, +ap.active, ap.lifted, ap.changed, sorted(ap._expiry),
            {k: list(v) for k, v in ap._recent.items()})


def test_apply_many_is_entry_one_at_a_time() -> None:
    for seed in range(12):
        entries = mixed(seed)
        slow, fast = Applier(cfg()), Applier(cfg())
        expected = one_by_one(slow, entries)
        # in chunks, as the watch hands them over
        got = Applied([], [], 0, [], [])
        for i in range(0, len(entries), 37):
            part = fast.apply_many(entries[i:i + 37], NOW, LIVE_AGE)
            got.lines += part.lines
            got.refused += part.refused
            got.expired += part.expired
            got.delete_own += part.delete_own
            assert part.errors == []
        assert got == expected, seed
        assert state(fast) == state(slow), seed
        assert any(line.event == "ban" for line in got.lines) and got.refused and got.expired


def test_the_caps_hold_in_the_fast_loop() -> None:
    """origin_max (catch-up included) and origin_rate (live entries only) on well-formed IPv4 bans."""
    ap = Applier(cfg())
    catchup = [Entry(make_key("a", "portsentinel", f"203.0.113.{i}"), "PUT", ban("a", f"203.0.113.{i}"), i, 0,
                     NOW - 3600) for i in range(40)]
    done = ap.apply_many(catchup, NOW, LIVE_AGE)
    assert len(done.lines) == 30 and len(done.refused) == 10
    assert all("origin_max" in reason for _, reason in done.refused)
    live = [Entry(make_key("b", "portsentinel", f"203.0.113.{i}"), "PUT", ban("b", f"203.0.113.{i}"), i, 0, NOW)
            for i in range(8)]
    done = ap.apply_many(live, NOW, LIVE_AGE)
    assert len(done.lines) == 5 and [r for _, r in done.refused] == ["origin b: over 5 bans a minute (origin_rate)"] * 3
