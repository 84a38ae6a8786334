"""jail.conf (+ jail.d/*.conf, jail.local, jail.d/*.local) → typed jail settings. No I/O beyond reading them.

A broken jail is reported with file:line:key and left out; the others still load.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path

from portsentinel.common import values
from portsentinel.responder.config.inifile import Ini, IniError, Value, parse_args_spec, read_layered

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
BACKENDS = ("auto", "systemd", "pyinotify")
#: The filter of the fleet's jail (docs/fleet.md): a jail using it applies other hosts' bans from the fleet
#: daemon's JSON lines (bantime from the origin's PS_UNTIL, never re-shared).
FLEET_FILTER = "portsentinel-fleet"
#: The longest duration a key may hold (about 31 years); longer is a typo, and -1 means forever anyway.
MAX_DURATION = 1e9


@dataclass(frozen=True)
class ActionRef:
    """``name[key=value, …]`` from a jail's ``action``."""

    name: str
    args: dict[str, str]
    where: str


@dataclass
class JailConfig:
    name: str
    where: str
    enabled: bool = False
    filter: str = ""
    filter_args: dict[str, str] = field(default_factory=dict)
    backend: str = "auto"
    logpath: str = ""
    actions: list[ActionRef] = field(default_factory=list)
    maxretry: int = 1
    findtime: float = 600.0
    bantime: float = 3600.0  # -1 = forever
    bantime_increment: bool = False
    bantime_factor: float = 2.0
    bantime_maxtime: float = 7 * 86400.0
    ignoreip: tuple[IPNetwork, ...] = ()
    ignoreself: bool = True
    maxbans_per_minute: int = 60
    verified_only: bool = False
    #: A record counts only when journald's trusted _UID is one of these (empty: any writer).
    trusted_uids: tuple[int, ...] = (0,)
    #: …and, where the record carries _SYSTEMD_UNIT, that unit is one of these (empty: not checked).
    trusted_units: tuple[str, ...] = ()
    #: Sources are counted and banned per network of this many bits (32: per IPv4 address; IPv6: per /64).
    ban_prefix_v4: int = 32
    ban_prefix_v6: int = 64
    #: When ``ban_prefix_v6_escalate_after`` networks of one /``ban_prefix_v6_escalate`` are banned within
    #: ``ban_prefix_v6_escalate_window``, the wider network is banned instead (0: never).
    ban_prefix_v6_escalate: int = 0
    ban_prefix_v6_escalate_after: int = 3
    ban_prefix_v6_escalate_window: float = 3600.0
    #: This jail's bans and unbans are shared with the fleet (decision records carry PS_SHARE=1).
    share: bool = False
    #: The fleet jail: a remote ban's remaining time times the multiplier for its number of origins (PS_ORIGINS):
    #: the 1st for one origin, the 2nd for two, the last for that many or more; capped by bantime.maxtime.
    bantime_fleetmultipliers: tuple[float, ...] = (1.0, 2.0, 4.0)
    #: The uid that must own the jail's JSON-lines file (``logowner``; None: the first trusted_uid).
    logowner: int | None = None

    @property
    def fleet(self) -> bool:
        """The fleet's jail: it applies remote bans (its filter is portsentinel-fleet)."""
        return self.filter == FLEET_FILTER

    @property
    def file_owner(self) -> int | None:
        """Who must own the jail's JSON-lines file (FileSource's expected_uid)."""
        if self.logowner is not None:
            return self.logowner
        return self.trusted_uids[0] if self.trusted_uids else None


@dataclass
class ResponderConfig:
    jails: list[JailConfig]
    errors: list[str]
    disabled: list[str]
    config_dir: Path


def parse_duration(text: str) -> float:
    """``600``, ``10m``, ``1h``, ``1d``, ``1w``, ``0``; ``-1`` means forever (the shared grammar), at most
    MAX_DURATION. Raises ValueError."""
    value = values.duration(text, zero=True, forever=True)
    if value > MAX_DURATION:
        raise ValueError(f"duration too long: {text!r} (at most {MAX_DURATION:.0f} seconds; -1 is forever)")
    return value


def parse_factor(text: str) -> float:
    """``bantime.factor``: a finite number from 1 to 1000."""
    try:
        value = float(text.strip())
    except ValueError:
        raise ValueError(f"not a number: {text.strip()!r}") from None
    if not 1.0 <= value <= 1000.0:  # also refuses nan and inf
        raise ValueError(f"must be a number from 1 to 1000, got {text.strip()!r}")
    return value


def parse_multipliers(text: str) -> tuple[float, ...]:
    """``bantime.fleetmultipliers``: one or more finite numbers above 0 and at most 1000, e.g. ``1 2 4``."""
    out = []
    for tok in values.tokens(text):
        try:
            value = float(tok)
        except ValueError:
            raise ValueError(f"not a number: {tok!r}") from None
        if not 0.0 < value <= 1000.0:  # also refuses nan and inf
            raise ValueError(f"each multiplier must be above 0 and at most 1000, got {tok!r}")
        out.append(value)
    if not out:
        raise ValueError("needs at least one multiplier (e.g. 1 2 4)")
    if len(out) > 64:
        raise ValueError(f"at most 64 multipliers, got {len(out)}")
    return tuple(out)


def parse_int(text: str) -> int:
    try:
        return int(text.strip(), 10)
    except ValueError:
        raise ValueError(f"not an integer: {text.strip()!r}") from None


def parse_bool(text: str) -> bool:
    """The shared boolean grammar; an empty value is false."""
    return values.boolean(text, empty=False)


def parse_networks(text: str) -> tuple[IPNetwork, ...]:
    """Addresses and networks, comma and/or whitespace separated; host bits are masked (fail2ban's ignoreip)."""
    return tuple(values.network(token, strict=False) for token in values.tokens(text))


def split_actions(text: str) -> list[str]:
    """One action reference per line (fail2ban's layout); a reference may span lines inside ``[…]``."""
    refs: list[str] = []
    depth = 0
    cur = ""
    for ch in text:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth = max(0, depth - 1)
        if ch == "\n" and depth == 0:
            if cur.strip():
                refs.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if cur.strip():
        refs.append(cur.strip())
    return refs


class _Reader:
    """Typed access to one jail's keys, errors naming file:line:key."""

    def __init__(self, ini: Ini, section: str) -> None:
        self.ini = ini
        self.section = section

    def where(self, key: str) -> Value | None:
        return self.ini.value(self.section, key)

    def text(self, key: str, default: str) -> str:
        return self.ini.get(self.section, key, default, vars={"__name__": self.section, "name": self.section})

    def conv(self, key: str, default: str, fn: object) -> object:
        raw = self.text(key, default)
        try:
            return fn(raw)  # type: ignore[operator]
        except ValueError as exc:
            val = self.where(key)
            if val is None:
                raise IniError("(default)", 0, self.section, key, str(exc)) from None
            raise IniError.at(val, self.section, key, str(exc)) from None


def _jail(ini: Ini, name: str) -> JailConfig:
    r = _Reader(ini, name)
    first = next(iter(ini.sections.get(name, {}).values()), None)
    where = f"{first.path}:{first.line}" if first else "?"
    if not _NAME_RE.match(name):
        raise IniError(first.path if first else "?", first.line if first else 0, name, "-",
                       "jail names are letters, digits, '.', '_' and '-' (at most 64)")
    j = JailConfig(name=name, where=where)
    j.enabled = bool(r.conv("enabled", "false", parse_bool))
    fspec = r.text("filter", "")
    if j.enabled and not fspec:
        val = r.where("filter")
        raise IniError(val.path if val else where.split(":")[0], val.line if val else 0, name, "filter", "missing")
    if fspec:
        try:
            j.filter, j.filter_args = parse_args_spec(fspec)
        except ValueError as exc:
            val = r.where("filter")
            raise IniError.at(val, name, "filter", str(exc)) if val else exc from None
    j.backend = r.text("backend", "auto").strip()
    if j.backend not in BACKENDS:
        val = r.where("backend")
        assert val is not None
        raise IniError.at(val, name, "backend", f"expected one of {', '.join(BACKENDS)}, got {j.backend!r}")
    j.logpath = r.text("logpath", "").strip()
    aval = r.where("action")
    for ref in split_actions(r.text("action", "")):
        try:
            aname, args = parse_args_spec(ref)
        except ValueError as exc:
            assert aval is not None
            raise IniError.at(aval, name, "action", str(exc)) from None
        j.actions.append(ActionRef(aname, args, f"{aval.path}:{aval.line}" if aval else where))
    j.maxretry = int(r.conv("maxretry", "1", parse_int))  # type: ignore[call-overload]
    if j.maxretry < 1:
        val = r.where("maxretry")
        assert val is not None
        raise IniError.at(val, name, "maxretry", "must be at least 1")
    j.findtime = float(r.conv("findtime", "10m", parse_duration))  # type: ignore[arg-type]
    j.bantime = float(r.conv("bantime", "1h", parse_duration))  # type: ignore[arg-type]
    j.bantime_increment = bool(r.conv("bantime.increment", "false", parse_bool))
    j.bantime_factor = float(r.conv("bantime.factor", "2", parse_factor))  # type: ignore[arg-type]
    j.bantime_maxtime = float(r.conv("bantime.maxtime", "1w", parse_duration))  # type: ignore[arg-type]
    j.ignoreip = r.conv("ignoreip", "", parse_networks)  # type: ignore[assignment]
    j.ignoreself = bool(r.conv("ignoreself", "true", parse_bool))
    j.maxbans_per_minute = int(r.conv("maxbans_per_minute", "60", parse_int))  # type: ignore[call-overload]
    j.verified_only = bool(r.conv("verified_only", "false", parse_bool))
    j.trusted_uids = r.conv("trusted_uid", "0", _uids)  # type: ignore[assignment]
    j.trusted_units = tuple(u for u in re.split(r"[\s,]+", r.text("trusted_unit", "")) if u)
    j.ban_prefix_v4 = int(r.conv("ban_prefix_v4", "32", _prefix(1, 32)))  # type: ignore[call-overload]
    j.ban_prefix_v6 = int(r.conv("ban_prefix_v6", "64", _prefix(1, 128)))  # type: ignore[call-overload]
    j.ban_prefix_v6_escalate = int(r.conv("ban_prefix_v6_escalate", "", _prefix(0, 128)))  # type: ignore[call-overload]
    if j.ban_prefix_v6_escalate and j.ban_prefix_v6_escalate >= j.ban_prefix_v6:
        val = r.where("ban_prefix_v6_escalate")
        raise IniError.at(val, name, "ban_prefix_v6_escalate", f"/{j.ban_prefix_v6_escalate} must be wider (a "
                          f"smaller number) than ban_prefix_v6 /{j.ban_prefix_v6}") if val else \
            IniError("(default)", 0, name, "ban_prefix_v6_escalate", "must be wider than ban_prefix_v6")
    j.ban_prefix_v6_escalate_after = int(r.conv("ban_prefix_v6_escalate_after", "3",  # type: ignore[call-overload]
                                                _at_least(2)))
    j.ban_prefix_v6_escalate_window = float(r.conv("ban_prefix_v6_escalate_window", "1h",  # type: ignore[arg-type]
                                                   parse_duration))
    _fleet_keys(r, j)
    return j


def _fleet_keys(r: _Reader, j: JailConfig) -> None:
    """``share``, ``bantime.fleetmultipliers`` and ``logowner`` (docs/fleet.md)."""
    j.share = bool(r.conv("share", "false", parse_bool))
    if j.share and j.fleet:
        val = r.where("share")
        assert val is not None  # the default is false
        raise IniError.at(val, j.name, "share", "the fleet's jail never shares: its bans came from the fleet")
    j.bantime_fleetmultipliers = r.conv("bantime.fleetmultipliers", "1 2 4",  # type: ignore[assignment]
                                        parse_multipliers)
    if j.enabled and j.fleet and not (j.logpath or "x.jsonl").endswith(".jsonl"):
        val = r.where("logpath")
        assert val is not None  # an empty logpath is the default file, which is JSON lines
        raise IniError.at(val, j.name, "logpath", "the fleet's jail reads the fleet daemon's JSON-lines file "
                          f"(*.jsonl), not {j.logpath!r}")
    if j.enabled and r.text("logowner", "").strip():  # a user that exists only where the jail is enabled
        owners: tuple[int, ...] = r.conv("logowner", "", _uids)  # type: ignore[assignment]
        if len(owners) != 1:
            val = r.where("logowner")
            assert val is not None
            raise IniError.at(val, j.name, "logowner", "exactly one user (name or uid)")
        j.logowner = owners[0]


def _at_least(lo: int) -> object:
    def parse(text: str) -> int:
        n = parse_int(text)
        if n < lo:
            raise ValueError(f"must be at least {lo}")
        return n

    return parse


def _prefix(lo: int, hi: int) -> object:
    """A prefix-length parser: an integer from ``lo`` to ``hi``, a leading '/' allowed; empty is 0."""

    def parse(text: str) -> int:
        t = text.strip().lstrip("/")
        if not t:
            return 0 if lo == 0 else hi
        n = parse_int(t)
        if not lo <= n <= hi:
            raise ValueError(f"prefix length {n} out of range {lo}..{hi}")
        return n

    return parse


def _uids(text: str) -> tuple[int, ...]:
    import pwd

    out = []
    for tok in re.split(r"[\s,]+", text.strip()):
        if not tok:
            continue
        if tok.isdigit():
            out.append(int(tok))
        else:
            try:
                out.append(pwd.getpwnam(tok).pw_uid)
            except KeyError:
                raise ValueError(f"no such user: {tok!r}") from None
    return tuple(out)


def _trap_problem(config_dir: Path, jail: JailConfig) -> str | None:
    """A kernel-trap action's settings that cannot be used (responder.trap.settings), as ``file:line: key: reason``."""
    from portsentinel.responder.actions.action import load_action
    from portsentinel.responder.trap.settings import MARKER, TrapError, settings_from

    for ref in jail.actions:
        try:
            action = load_action(config_dir / "actions.d", (ref.name, ref.args), jail.name)
        except ValueError:
            continue  # the action's own errors are reported where actions are loaded
        if action.options.get(MARKER, "").strip().lower() not in ("yes", "1", "true"):
            continue
        try:
            settings_from(action.params, jail.name, jail.ignoreip, prefix4=jail.ban_prefix_v4,
                          prefix6=jail.ban_prefix_v6)
        except TrapError as exc:
            return f"{ref.where}: {jail.name}: action {ref.name}: {exc}"
    return None


def load(config_dir: Path) -> ResponderConfig:
    """Every jail of ``config_dir/jail.conf`` with its layers. Raises IniError only if jail.conf is unreadable."""
    ini = read_layered(config_dir / "jail.conf")
    jails: list[JailConfig] = []
    errors: list[str] = []
    disabled: list[str] = []
    for name in ini.user_sections():
        try:
            jail = _jail(ini, name)
        except IniError as exc:
            errors.append(str(exc))
            continue
        if jail.enabled:
            problem = _trap_problem(config_dir, jail)
            if problem:
                errors.append(problem)
                continue
            jails.append(jail)
        else:
            disabled.append(name)
    return ResponderConfig(jails, errors, disabled, config_dir)
