"""Load ``actions.d/NAME.conf`` (+ ``.local``) into an :class:`Action` whose phases render to argv lists.

``[Definition]`` holds the command templates (``actionstart``, ``actionstop``, ``actioncheck``,
``actionban``, ``actionunban``, ``actionflush``; see responder.actions.render for their syntax) and options
(``actionstart_on_demand``, ``shell``, ``order``, ``batchset``, ``names``: the objects it creates, checked
against their tool's name grammar at load time, see responder.config.names). ``[Init]`` holds defaults that the jail's
``action = NAME[key=value, …]`` arguments override; both are visible to templates by name, next to the
documented variables. Everything is checked at load time: a typo in a template, an undefined variable or a
missing key is an :class:`ActionError` naming ``file:line: key``.

fail2ban's ``port`` argument (the protected ports, text such as ``ssh`` or ``22,80``) is exposed as
``ports``, because ``port`` is the alert's port number at ban time.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from portsentinel.responder.actions.render import (
    Command,
    RenderError,
    TemplateError,
    Where,
    compile_command,
    compile_commands,
)
from portsentinel.responder.actions.variables import BAN_VARS, NAME_RE, BanVars, VarError, validate_vars
from portsentinel.responder.config.inifile import Ini, IniError, Value, parse_args_spec, read_layered
from portsentinel.responder.config.names import problem

DEFINITION = "Definition"
INIT = "Init"
PHASES = ("actionstart", "actionstop", "actioncheck", "actionban", "actionunban", "actionflush")
#: Phases that act on one address and see the ban-time variables.
BAN_PHASES = frozenset({"actionban", "actionunban"})
REQUIRED = ("actionban", "actionunban")
_TRUE = {"1", "yes", "true", "on"}
_FALSE = {"0", "no", "false", "off", ""}


class ActionError(ValueError):
    """An action that cannot be loaded or rendered; ``str()`` starts with ``path:line: key``."""


#: Seconds an nft set element outlives the ban's own expiry: the responder lifts the ban first (and tells the
#: detector, docs/responder.md "A scanner that comes back"); the kernel's timeout stays the safety net for a
#: responder that is not running. Without it the kernel and the responder's timer race by a few ms, and probes
#: in between would get through and count as probes of the ban that was ending.
KERNEL_GRACE = 1


@dataclass(frozen=True)
class Step:
    """One command to run: its argv, whether a failure fails the phase, and its template's place."""

    argv: list[str]
    check: bool
    where: str


@dataclass(frozen=True)
class Steps:
    """A plan carried out by the runner: commands in order (none when the phase does not concern the ban)."""

    steps: tuple[Step, ...] = ()


@dataclass(frozen=True)
class SetElement:
    """A plan carried out by an nft batch (responder.adapters.nftbatch): one element of a set of a table, with a
    kernel timeout in seconds (None: no end)."""

    table: str
    set: str
    element: str
    timeout: int | None


Plan = Steps | SetElement


@dataclass(frozen=True)
class Action:
    """One action bound to one jail: compiled commands per phase and its static variables."""

    name: str
    jail: str
    path: str
    params: Mapping[str, object]
    commands: Mapping[str, tuple[Command, ...]]
    start_on_demand: bool = False
    #: Relative order among a jail's actions for ban (lower first; unban runs in reverse). Default 0.
    order: int = 0
    #: Template of the nft set an address goes to, when the action can be batched (responder.adapters.nftbatch).
    batchset: Command | None = None
    options: Mapping[str, str] = field(default_factory=dict)
    #: Address families handled (``families = inet6`` in [Definition]); bans of others render no command.
    families: frozenset[str] = frozenset({"inet", "inet6"})
    #: Set names already rendered, by the values of the variables the batchset template names (100k bans at
    #: start render it once per distinct combination, not once per ban).
    _sets: dict[tuple[object, ...], str | None] = field(default_factory=dict, compare=False, repr=False)

    def plan(self, phase: str, ban: BanVars | None = None, *, batch: bool = True) -> Plan:
        """What carrying out ``phase`` means: the rendered commands, or (``actionban`` of a batchable action,
        unless ``batch`` is off) the set element to add. ``ban`` is required by the ban phases and refused by
        the others; a ban of a family the action does not handle plans nothing. Raises ActionError (or
        RenderError, both ValueErrors) naming file:line."""
        if phase not in PHASES:
            raise ValueError(f"unknown phase {phase!r}")
        if phase in BAN_PHASES:
            if ban is None:
                raise ActionError(f"{self.path}:0: {phase}: needs the ban's variables")
            if ban.family not in self.families:
                return Steps()
            if batch and phase == "actionban" and self.batchset is not None:
                name = self._set_name(ban)
                if name is not None:
                    timeout = None if ban.bantime < 0 else ban.bantime + KERNEL_GRACE
                    return SetElement(str(self.params.get("table", "portsentinel")), name, ban.ip, timeout)
            ctx = {**self.params, **ban.context()}
        elif ban is not None:
            raise ActionError(f"{self.path}:0: {phase}: takes no ban variables")
        else:
            ctx = dict(self.params)
        return Steps(tuple(Step(cmd.render(ctx), cmd.check, str(cmd.where)) for cmd in self.commands.get(phase, ())))

    @property
    def set_vars(self) -> tuple[str, ...]:
        """The variables the batchset template names (``("family",)`` for the nftables action)."""
        return self._set_vars

    @functools.cached_property
    def _set_vars(self) -> tuple[str, ...]:
        return tuple(sorted(self.batchset.variables())) if self.batchset is not None else ()

    def _set_name(self, ban: BanVars) -> str | None:
        """The batchset template rendered: one word, the set's name (None: not batchable this time). Rendered
        once per distinct value of the variables it names (the family, mostly), not once per ban."""
        known = ban.context()
        key = tuple(known.get(n, self.params.get(n)) for n in self._set_vars)
        if "ip" in self._set_vars or key not in self._sets:
            ctx = {**self.params, **known}
            words = self.batchset.render(ctx) if self.batchset is not None else []
            name = words[0] if len(words) == 1 else None
            if "ip" in self._set_vars:
                return name
            self._sets[key] = name
        return self._sets[key]

    def has(self, phase: str) -> bool:
        return bool(self.commands.get(phase))


_REF_RE = re.compile(r"%%|%\(([A-Za-z0-9_.-]+)\)s")
MAX_DEPTH = 10


def definition(ini: Ini, key: str, args: Mapping[str, str], path: str, default: str = "") -> str:
    """A [Definition] value with ``%(name)s`` expanded (jail arguments, then [Definition], [Init],
    [DEFAULT]) and ``%%`` turned into ``%``; any other ``%`` is kept, so jinja's ``{% … %}`` needs no escaping.
    """
    val = ini.value(DEFINITION, key)
    if val is None:
        return default

    def expand(text: str, depth: int) -> str:
        def sub(m: re.Match[str]) -> str:
            if m.group(0) == "%%":
                return "%"
            ref = m.group(1).lower()
            if depth >= MAX_DEPTH:
                raise ActionError(f"{val.path}:{val.line}: {key}: %({ref})s nested too deep (a cycle?)")
            if ref in args:
                return args[ref]
            for section in (DEFINITION, INIT):
                found = ini.value(section, ref)
                if found is not None:
                    return expand(found.text, depth + 1)
            raise ActionError(f"{val.path}:{val.line}: {key}: %({ref})s is not defined")

        return _REF_RE.sub(sub, text)

    return expand(val.text, 0)


def _flag(ini: Ini, key: str, args: Mapping[str, str], path: str) -> bool:
    text = definition(ini, key, args, path).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    val = ini.value(DEFINITION, key)
    raise ActionError(f"{val.path if val else path}:{val.line if val else 0}: {key}: expected yes or no")


def _where(val: Value | None, path: str, key: str) -> Where:
    return Where(val.path if val else path, val.line if val else 0, key)


def load_action(actions_dir: Path, spec: str | tuple[str, Mapping[str, str]], jail: str) -> Action:
    """Load action ``spec`` (``"name[k=v, …]"`` or ``(name, args)``) for ``jail`` from ``actions_dir``."""
    if isinstance(spec, str):
        try:
            name, args = parse_args_spec(spec)
        except ValueError as exc:
            raise ActionError(f"{actions_dir}:0: action: {exc}") from None
    else:
        name, args = spec[0], dict(spec[1])
    if not NAME_RE.match(name):
        raise ActionError(f"{actions_dir}:0: action: bad action name {name!r}")
    path = actions_dir / f"{name}.conf"
    if not path.exists() and not (actions_dir / f"{name}.local").exists():
        raise ActionError(f"{path}:0: action: unknown action {name!r} (no {name}.conf in {actions_dir})")
    try:
        ini = read_layered(path)
        return _build(ini, name, {k.lower(): v for k, v in args.items()}, jail, str(path))
    except IniError as exc:
        raise ActionError(str(exc)) from None
    except (TemplateError, RenderError) as exc:
        raise ActionError(str(exc)) from None


def _build(ini: Ini, name: str, args: dict[str, str], jail: str, path: str) -> Action:
    if not ini.has_section(DEFINITION):
        raise ActionError(f"{path}:0: [Definition]: missing section")
    # Static variables: [Init] overridden by the jail's arguments; fail2ban's `port` becomes `ports`.
    raw: dict[str, str] = {}
    for key in ini.options(INIT):
        raw[key] = ini.get(INIT, key, vars=args)
    if "port" in raw:
        raw.setdefault("ports", raw.pop("port"))
    raw.update(args)
    if "port" in raw:
        raw["ports"] = raw.pop("port")
    bad = sorted(set(raw) & BAN_VARS)
    if bad:
        raise ActionError(f"{path}:0: [Init]: {', '.join(bad)}: reserved for ban-time variables")
    raw.setdefault("name", jail)
    raw["jail"] = jail
    try:
        params = validate_vars(raw)
    except VarError as exc:
        where = ini.value(INIT, exc.name)
        raise ActionError(f"{_where(where, path, exc.name)}: {exc}") from None
    interp = {k: v for k, v in raw.items()}

    for key in REQUIRED:
        if ini.value(DEFINITION, key) is None:
            raise ActionError(f"{path}:0: {key}: missing in [Definition]")
    shell = _flag(ini, "shell", interp, path)
    commands: dict[str, tuple[Command, ...]] = {}
    for phase in (*PHASES, "actionstart_on_demand"):
        val = ini.value(DEFINITION, phase)
        if val is None or phase == "actionstart_on_demand":
            continue
        text = definition(ini, phase, interp, path)
        lines = val.lines if text.count("\n") == val.text.count("\n") else (val.line,)
        cmds = tuple(compile_commands(text, val.path, phase, lines, shell=shell))
        _check_vars(cmds, phase, params)
        commands[phase] = cmds
    if not commands.get("actionban"):
        val = ini.value(DEFINITION, "actionban")
        raise ActionError(f"{_where(val, path, 'actionban')}: empty")

    order = 0
    oval = ini.value(DEFINITION, "order")
    if oval is not None:
        cmd = compile_command(definition(ini, "order", interp, path), _where(oval, path, "order"), program=False)
        words = cmd.render(params)
        if len(words) != 1 or not words[0].lstrip("-").isdigit():
            raise ActionError(f"{_where(oval, path, 'order')}: must render to an integer, got {words}")
        order = int(words[0])
    batchset = None
    bval = ini.value(DEFINITION, "batchset")
    btext = definition(ini, "batchset", interp, path)
    if bval is not None and btext.strip():
        batchset = compile_command(btext, _where(bval, path, "batchset"), program=False)
        _check_vars((batchset,), "actionban", params)
    _check_names(ini, interp, params, path, jail)
    fams = frozenset(definition(ini, "families", interp, path, "inet inet6").replace(",", " ").split())
    if not fams or fams - {"inet", "inet6"}:
        fval = ini.value(DEFINITION, "families")
        raise ActionError(f"{_where(fval, path, 'families')}: expected inet and/or inet6")
    return Action(
        name=name,
        families=fams,
        jail=jail,
        path=path,
        params=params,
        commands=commands,
        start_on_demand=_flag(ini, "actionstart_on_demand", interp, path),
        order=order,
        batchset=batchset,
        options={k: definition(ini, k, interp, path) for k in ini.options(DEFINITION) if k not in PHASES},
    )


def _check_names(ini: Ini, interp: Mapping[str, str], params: Mapping[str, object], path: str, jail: str) -> None:
    """``[Definition] names``: every ``KIND:NAME`` the action will create fits its tool grammar (config.names)."""
    nval = ini.value(DEFINITION, "names")
    if nval is None:
        return
    where = _where(nval, path, "names")
    cmd = compile_command(definition(ini, "names", interp, path), where, program=False)
    _check_vars((cmd,), "actionstart", params)
    for word in cmd.render(params):
        kind, sep, name = word.partition(":")
        why = problem(kind, name) if sep else f"expected KIND:NAME, got {word!r}"
        if why is not None:
            raise ActionError(f"{where}: jail {jail}: {why}")


def _check_vars(cmds: tuple[Command, ...], phase: str, params: Mapping[str, object]) -> None:
    known = set(params) | (BAN_VARS if phase in BAN_PHASES else set())
    for cmd in cmds:
        missing = sorted(cmd.variables() - known - {"range", "loop"})
        if missing:
            extra = "" if phase in BAN_PHASES else " (ban-time variables exist only in actionban/actionunban)"
            raise ActionError(f"{cmd.where}: undefined variable {', '.join(missing)}{extra}")
