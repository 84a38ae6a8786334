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

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from portsentinel.responder.actions.render import (
    BAN_VARS,
    NAME_RE,
    Command,
    RenderError,
    TemplateError,
    VarError,
    Where,
    compile_command,
    compile_commands,
    validate_vars,
)
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


@dataclass(frozen=True)
class Step:
    """One command to run: its argv, whether a failure fails the phase, and its template's place."""

    argv: list[str]
    check: bool
    where: str


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

    def handles(self, ip: str) -> bool:
        """True when a ban of ``ip`` (any text) concerns this action's families."""
        try:
            family = validate_vars({"ip": ip})["family"]
        except VarError:
            return False
        return family in self.families

    def argv(self, phase: str, ban: Mapping[str, object] | None = None) -> list[list[str]]:
        """The argument vectors of ``phase``, rendered with ``ban`` variables (ban phases only)."""
        if phase not in PHASES:
            raise ValueError(f"unknown phase {phase!r}")
        ctx = self.context(phase, ban)
        if phase in BAN_PHASES and ctx["family"] not in self.families:
            return []
        return [cmd.render(ctx, validated=True) for cmd in self.commands.get(phase, ())]

    def steps(self, phase: str, ban: Mapping[str, object] | None = None) -> list[Step]:
        """Like :meth:`argv`, with each command's ``check`` flag (False for ``!try``) and source place."""
        if phase not in PHASES:
            raise ValueError(f"unknown phase {phase!r}")
        ctx = self.context(phase, ban)
        if phase in BAN_PHASES and ctx["family"] not in self.families:
            return []
        return [Step(cmd.render(ctx, validated=True), cmd.check, str(cmd.where))
                for cmd in self.commands.get(phase, ())]

    def context(self, phase: str, ban: Mapping[str, object] | None = None) -> dict[str, object]:
        """Static variables plus validated ``ban`` variables (which must be documented ban-time names)."""
        ctx = dict(self.params)
        if phase in BAN_PHASES:
            if not ban or "ip" not in ban:
                raise ActionError(f"{self.path}:0: {phase}: needs at least the 'ip' variable")
            extra = set(ban) - BAN_VARS
            if extra:
                raise ActionError(f"{self.path}:0: {phase}: not ban-time variables: {', '.join(sorted(extra))}")
            try:
                ctx.update(validate_vars(ban))
            except VarError as exc:
                raise ActionError(f"{self.path}:0: {phase}: {exc}") from None
        elif ban:
            raise ActionError(f"{self.path}:0: {phase}: takes no ban variables")
        return ctx

    def batch_set(self, ban: Mapping[str, object]) -> str | None:
        """The nft set name for this ban when the action is batchable, else None."""
        if self.batchset is None:
            return None
        words = self.batchset.render(self.context("actionban", ban), validated=True)
        return words[0] if len(words) == 1 else None

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
        words = cmd.render(params, validated=True)
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
    for word in cmd.render(params, validated=True):
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
