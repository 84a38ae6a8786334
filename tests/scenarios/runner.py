"""Replayable scenarios for the responder's core: records that carry their own time in, decisions out.

A scenario file (tests/scenarios/*.txt, format in docs/testing.md) holds a jail configuration, the host's
never-ban facts, the input records (JSON, one a line, each with ``PS_TIME`` or ``__REALTIME_TIMESTAMP``) and the
decisions expected, each at its time. The runner binds the configuration as the daemon does
(responder.loading.build: the shipped filter.d and actions.d), then feeds each record through the real engine, jail,
never-ban guard, per-minute cap, ban book, sqlite store and keeper, with the clock set from the records: bans expire
at their own time between two records, and at ``--- until T``. A ``restart T`` line among the records stops the
core and starts a new one at T on the same sqlite file (the bans restored as at the daemon's start). Every jail's one
action is ``hosts-deny`` on a file of its own that the test made; after each step the files must list exactly the
bans in force, and the store must hold the same.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from portsentinel import record as R
from portsentinel.responder.actions.executor import Executor
from portsentinel.responder.adapters.runner import Result, SubprocessRunner
from portsentinel.responder.adapters.store import Store
from portsentinel.responder.core.bans import FOREVER, Ban, BanBook
from portsentinel.responder.core.engine import Decision, Engine
from portsentinel.responder.core.guard import NeverBan
from portsentinel.responder.core.keeper import Keeper
from portsentinel.responder.core.sources import Entry
from portsentinel.responder.loading import build

ROOT = Path(__file__).resolve().parent.parent.parent
SECTIONS = ("jail", "host", "records", "until", "expect")
HOST_KINDS = ("own", "gateway", "resolver")
EVENTS = ("ban", "unban", "ignored", "forged", "invalid")


class ScenarioError(ValueError):
    """A scenario file that cannot be run, as ``file:line: reason``."""


class ScenarioMismatch(AssertionError):
    """What the responder decided differs from what the scenario expects."""


@dataclass
class Scenario:
    path: Path
    jail: str = ""
    host: dict[str, list[str]] = field(default_factory=lambda: {k: [] for k in HOST_KINDS})
    #: (line, time, fields); fields None: a restart at that time
    records: list[tuple[int, float, dict[str, str] | None]] = field(default_factory=list)
    until: float | None = None
    expect: list[tuple[int, str]] = field(default_factory=list)  # (line, decision)

    def where(self, line: int) -> str:
        return f"{self.path}:{line}"


def fmt_time(t: float) -> str:
    return f"{t:.6f}".rstrip("0").rstrip(".")


def record_time(fields: dict[str, Any]) -> float:
    """The record's own time: journald's ``__REALTIME_TIMESTAMP`` (µs), else the writer's ``PS_TIME`` (s)."""
    if "__REALTIME_TIMESTAMP" in fields:
        return int(str(fields["__REALTIME_TIMESTAMP"])) / 1e6
    return float(str(fields[R.F_TIME]))


def parse(path: Path) -> Scenario:
    s = Scenario(path)
    section = ""
    jail: list[str] = []
    seen: set[str] = set()
    for n, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if raw.startswith("--- "):
            words = raw[4:].split()
            section = words[0] if words else ""
            if section not in SECTIONS:
                raise ScenarioError(f"{s.where(n)}: unknown section {section!r} (one of {', '.join(SECTIONS)})")
            if section in seen:
                raise ScenarioError(f"{s.where(n)}: section {section} twice")
            seen.add(section)
            if section == "until":
                try:
                    (text,) = words[1:]
                    s.until = float(text)
                except ValueError:
                    raise ScenarioError(f"{s.where(n)}: expected '--- until SECONDS'") from None
            continue
        if section == "jail":
            jail.append(raw)
            continue
        if not line or line.startswith("#"):
            continue
        if section == "host":
            kind, _, addr = line.partition(" ")
            if kind not in HOST_KINDS or not addr.strip():
                raise ScenarioError(f"{s.where(n)}: expected 'own|gateway|resolver ADDRESS', got {line!r}")
            s.host[kind].append(addr.strip())
        elif section == "records" and line.startswith("restart"):
            try:
                _, when_text = line.split()
                when = float(when_text)
            except ValueError:
                raise ScenarioError(f"{s.where(n)}: expected 'restart SECONDS'") from None
            if s.records and when < s.records[-1][1]:
                raise ScenarioError(f"{s.where(n)}: time {fmt_time(when)} before the previous record's")
            s.records.append((n, when, None))
        elif section == "records":
            try:
                fields = json.loads(line)
                if not isinstance(fields, dict):
                    raise ValueError("a record is a JSON object")
                when = record_time(fields)
            except (ValueError, KeyError) as exc:
                raise ScenarioError(f"{s.where(n)}: record without its own time, or not a JSON object "
                                    f"(PS_TIME or __REALTIME_TIMESTAMP): {exc}") from None
            if s.records and when < s.records[-1][1]:
                raise ScenarioError(f"{s.where(n)}: time {fmt_time(when)} before the previous record's")
            s.records.append((n, when, {str(k): str(v) for k, v in fields.items()}))
        elif section == "expect":
            words = line.split()
            if len(words) < 4 or words[1] not in EVENTS:
                raise ScenarioError(f"{s.where(n)}: expected 'TIME {'|'.join(EVENTS)} JAIL TARGET [DETAILS]'")
            s.expect.append((n, line))
        else:
            raise ScenarioError(f"{s.where(n)}: text outside a section (comments start with '#')")
    s.jail = "\n".join(jail) + "\n"
    if "records" not in seen or "expect" not in seen:
        raise ScenarioError(f"{path}: needs a '--- records' and an '--- expect' section")
    if re.search(r"^\s*(?:ban)?action\s*=", s.jail, re.M):
        raise ScenarioError(f"{path}: the runner sets every jail's action (hosts-deny on a file of the test)")
    return s


def hosts_deny_entry(ip: str) -> str:
    """How hosts.deny names a ban target (hosts_access(5): IPv6 in brackets, an IPv4 network as net/mask)."""
    if "/" not in ip:
        return f"[{ip}]" if ":" in ip else ip
    net = ipaddress.ip_network(ip)
    if isinstance(net, ipaddress.IPv6Network):
        return f"[{net.network_address}]/{net.prefixlen}"
    return f"{net.network_address}/{net.netmask}"


class HostsDenyOnly:
    """The real runner, refusing anything but the internal hosts-deny command on a file in the scenario's own
    directory: a scenario can never run a firewall command, whatever its jail section says."""

    def __init__(self, deny_dir: Path) -> None:
        self.dir = str(deny_dir)
        self.real = SubprocessRunner()

    def run(self, argv: Sequence[str], *, input: str | None = None, timeout: float | None = None) -> Result:
        argv = tuple(argv)
        files = [w[len("file="):] for w in argv if w.startswith("file=")]
        if argv[:1] != ("@hosts-deny",) or len(files) != 1 or Path(files[0]).parent != Path(self.dir):
            raise AssertionError(f"scenario runner: refused to run {argv!r}")
        return self.real.run(argv, input=input, timeout=timeout)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Run:
    """One scenario's responder core: every part real, the clock the records'."""

    def __init__(self, s: Scenario, workdir: Path) -> None:
        self.s = s
        self.clock = Clock()
        self.lines: list[str] = []
        self.deny = workdir / "deny"  # one hosts.deny-style file per jail: JAIL.deny
        self.deny.mkdir()
        conf = workdir / "conf"
        conf.mkdir()
        (conf / "filter.d").symlink_to(ROOT / "filter.d")
        (conf / "jail.conf").write_text(f"[DEFAULT]\nbackend = systemd\n"
                                        f"action = hosts-deny[file=\"{self.deny}/%(__name__)s.deny\"]\n")
        (conf / "jail.local").write_text(s.jail)
        self.conf = conf
        self.db = workdir / "responder.sqlite3"
        self.start()
        for jail in self.engine.jails:
            (self.deny / f"{jail}.deny").write_text("")
            self.executor.start(jail, now=self.clock())

    def start(self) -> None:
        """A responder core as the daemon builds it at start: nothing in memory, the store on its file."""
        s = self.s
        self.executor = Executor(ROOT / "actions.d", self.report, runner=HostsDenyOnly(self.deny))
        built = build(self.conf, self.executor, "auto", True)
        if built.errors:
            raise ScenarioError(f"{s.path}: the jail section does not load: {'; '.join(built.errors)}")
        for jail, actions in built.actions.items():
            if [a.name for a in actions] != ["hosts-deny"]:
                raise ScenarioError(f"{s.path}: jail {jail}: actions {[a.name for a in actions]}, not hosts-deny")
        self.executor.actions = dict(built.actions)
        self.sources = sorted({rt.source for rt in built.runtimes})
        self.book = BanBook()
        self.store = Store(str(self.db))
        never = NeverBan(own=s.host["own"], gateways=s.host["gateway"], resolvers=s.host["resolver"])
        self.engine = Engine(built.runtimes, never, self.book, self.store)
        self.keeper = Keeper(self.store, self.book, self.executor, self.report, clock=self.clock)

    def restart(self, t: float) -> None:
        """Stopped after the last record, started at ``t``: bans that expired meanwhile lifted ("expired while
        stopped"), the others restored from the store and re-applied (the actions are idempotent)."""
        self.store.close()
        self.clock.now = t
        self.start()
        self.keeper.restore(self.engine.jails)
        self.check_in_force()

    def close(self) -> None:
        self.store.close()

    # -- what the responder reports: the unbans, once every action has lifted them
    def report(self, event: R.Event, message: str, **fields: str) -> None:
        if event is R.Event.UNBAN:
            target = fields.get(R.F_SRC_NET) or fields[R.F_SRC]
            self.lines.append(f"{fmt_time(self.clock())} unban {fields[R.F_JAIL]} {target} "
                              f"{fields.get(R.F_DETAIL, '')}".rstrip())
        elif event is R.Event.FAILED:
            raise ScenarioMismatch(f"{self.s.path}: an action failed: {message}")

    def _decided(self, d: Decision) -> None:
        t = fmt_time(self.clock())
        if d.kind == "ban" and d.ban is not None:
            b = d.ban
            bantime = "forever" if b.expires == FOREVER else fmt_time(b.bantime)
            self.lines.append(f"{t} ban {d.jail} {d.ip} bantime={bantime} offence={b.count} failures={b.failures}")
        else:
            self.lines.append(f"{t} {d.kind} {d.jail} {d.ip or '-'} {d.reason}")

    def advance(self, t: float) -> None:
        """Bans whose time is up by ``t`` lifted, each at its own expiry time."""
        while (nxt := self.book.next_expiry()) is not None and nxt <= t:
            self.clock.now = nxt
            self.keeper.lift(self.book.due(nxt), "expired")
            self.check_in_force()
        self.clock.now = max(self.clock.now, t)

    def feed(self, line: int, t: float, fields: dict[str, str]) -> None:
        self.advance(t)
        journal = "__REALTIME_TIMESTAMP" in fields
        entry = Entry(dict(fields), "", f"{self.s.path.name}:{line}", trusted=not journal)
        for source in self.sources:
            if (source == "journal") != journal:
                continue
            bans: list[Ban] = []
            for d in self.engine.entry(source, entry, t):
                self._decided(d)
                if d.kind == "ban" and d.ban is not None:
                    if d.replaces:
                        self.keeper.lift(list(d.replaces), f"covered by {d.ip}")
                    bans.append(d.ban)
            self.keeper.apply(bans, {source: entry.cursor})
            if self.store.cursor(source) != entry.cursor:  # a restart resumes after this entry, not before
                raise ScenarioMismatch(f"{self.s.where(line)}: the store's cursor of {source} is "
                                       f"{self.store.cursor(source)!r}, not this record's")
        self.check_in_force()

    def check_in_force(self) -> None:
        """The actions' effect and the store agree with the ban book: nothing pending, nothing missing."""
        listed = sorted((f.stem, line.split(":", 1)[1].strip()) for f in self.deny.iterdir()
                        for line in f.read_text().splitlines() if line.strip() and not line.startswith("#"))
        wanted = sorted((b.jail, hosts_deny_entry(b.ip)) for b in self.book.active.values())
        at = fmt_time(self.clock())
        if listed != wanted:
            raise ScenarioMismatch(f"{self.s.path}: at {at} hosts.deny lists {listed}, the bans in force are {wanted}")
        stored = sorted((b.jail, b.ip) for b in self.store.bans())
        if stored != sorted(self.book.active) or self.store.unbans():
            raise ScenarioMismatch(f"{self.s.path}: at {at} the store holds {stored} (pending unbans "
                                   f"{self.store.unbans()}), the ban book {sorted(self.book.active)}")


def run(s: Scenario, workdir: Path) -> list[str]:
    """The decisions the responder makes for the scenario's records, in order, as the expect lines name them."""
    r = Run(s, workdir)
    try:
        for line, t, fields in s.records:
            if fields is None:
                r.restart(t)
            else:
                r.feed(line, t, fields)
        if s.until is not None:
            r.advance(s.until)
        return r.lines
    finally:
        r.close()


def matches(expected: str, got: str) -> bool:
    """``TIME EVENT JAIL TARGET`` equal; then each ``key=value`` of a ban or the reason text of the others
    contained in what the responder said (a ban line lists bantime, offence and failures; name what matters)."""
    e, g = expected.split(maxsplit=4), got.split(maxsplit=4)
    if e[:4] != g[:4]:
        return False
    rest_e, rest_g = (e[4] if len(e) > 4 else ""), (g[4] if len(g) > 4 else "")
    if e[1] == "ban":
        return set(rest_e.split()) <= set(rest_g.split())
    return rest_e in rest_g


def check(s: Scenario, got: list[str]) -> None:
    """Raise ScenarioMismatch naming the first expect line (file:line) that the run does not match."""
    whole = "\n".join(f"    {line}" for line in got) or "    (no decisions)"
    for i, (n, want) in enumerate(s.expect):
        if i >= len(got):
            raise ScenarioMismatch(f"{s.where(n)}: expected {want!r}, the run ended before it\nthe run:\n{whole}")
        if not matches(want, got[i]):
            raise ScenarioMismatch(f"{s.where(n)}: expected {want!r}\n{' ' * len(s.where(n))}  got      "
                                   f"{got[i]!r}\nthe run:\n{whole}")
    if len(got) > len(s.expect):
        raise ScenarioMismatch(f"{s.path}: decisions the scenario does not expect: {got[len(s.expect):]}\n"
                               f"the run:\n{whole}")
