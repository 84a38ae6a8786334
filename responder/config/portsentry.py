"""A classic portsentry.conf's blocking keys → equivalent jails, so an old PortSentry set-up keeps its behaviour.

PortSentry 1.2 semantics kept:
- BLOCK_TCP / BLOCK_UDP: 0 = only log (a jail with no action), 1 = block (KILL_ROUTE and KILL_HOSTS_DENY) and
  run KILL_RUN_CMD, 2 = only run KILL_RUN_CMD.
- KILL_RUN_CMD_FIRST=1 runs the command before the blocking actions.
- PortSentry never lifts a block, so the jails' bantime is -1 (forever) unless ``bantime`` is given.
- KILL_ROUTE becomes the ``route`` action: ``reject``/``blackhole``/``unreachable``/``prohibit`` forms keep their
  route type, a gateway address form (``route add $TARGET$ 333.444.555.666``) becomes ``gateway=``.
- KILL_HOSTS_DENY becomes ``hosts-deny`` with the daemon list before the first ``:``.

Pure: text in, jail.conf text out (``portsentinel import-portsentry FILE > /etc/portsentinel/jail.d/portsentry.local``).
"""

from __future__ import annotations

import ipaddress
import re
import shlex

from portsentinel.common.portsentry_keys import KeyLineError, first_values, read_entries

_ROUTE_TYPES = ("blackhole", "unreachable", "prohibit", "reject")


class PortsentryImportError(ValueError):
    """A key that cannot be translated; ``str()`` names file:line: KEY."""


def read_keys(text: str, path: str) -> dict[str, tuple[str, int]]:
    """KEY → (value, line) for PortSentry's ``KEY="value"`` lines (the shared reader; first one wins, as in
    PortSentry)."""
    try:
        entries = first_values(read_entries(text, path))
    except KeyLineError as err:
        raise PortsentryImportError(str(err)) from None
    return {key: (entry.value, entry.line) for key, entry in entries.items()}


def _route_args(value: str, where: str) -> dict[str, str]:
    words = value.replace("$TARGET$", " TARGET ").split()
    kinds = [w for w in words if w in _ROUTE_TYPES]
    gateways = []
    for w in words:
        try:
            gateways.append(str(ipaddress.ip_address(w)))
        except ValueError:
            continue
    if "TARGET" not in words:
        raise PortsentryImportError(f"{where}: KILL_ROUTE: no $TARGET$ in {value!r}")
    if gateways:
        return {"gateway": gateways[0]}
    kind = kinds[0] if kinds else "blackhole"
    return {"blocktype": "prohibit" if kind == "reject" else kind}


def _hosts_deny_args(value: str, where: str) -> dict[str, str]:
    daemon, sep, rest = value.partition(":")
    if not sep or "$TARGET$" not in rest:
        raise PortsentryImportError(f"{where}: KILL_HOSTS_DENY: expected 'DAEMONS: $TARGET$ ...', got {value!r}")
    daemon = daemon.strip() or "ALL"
    if not re.fullmatch(r"[A-Za-z0-9_.,\- ]+", daemon):
        raise PortsentryImportError(f"{where}: KILL_HOSTS_DENY: bad daemon list {daemon!r}")
    return {"daemon": daemon.replace(" ", "")}


def _script_args(value: str, first: bool, where: str) -> dict[str, str]:
    try:
        words = shlex.split(value)
    except ValueError as exc:
        raise PortsentryImportError(f"{where}: KILL_RUN_CMD: {exc}") from None
    if not words or not words[0].startswith("/"):
        raise PortsentryImportError(f"{where}: KILL_RUN_CMD: the command must be an absolute path, got {value!r}")
    if '"' in value:
        raise PortsentryImportError(f"{where}: KILL_RUN_CMD: double quotes cannot be carried into a jail argument")
    return {"command": value, "first": "yes" if first else "no"}


def _spec(name: str, args: dict[str, str]) -> str:
    inner = ", ".join(f'{k}="{v}"' for k, v in args.items())
    return f"{name}[{inner}]" if inner else name


def convert(text: str, path: str, *, bantime: str = "-1") -> str:
    """jail.conf text with one jail per protocol, equivalent to the file's blocking settings."""
    keys = read_keys(text, path)

    def where(key: str) -> str:
        return f"{path}:{keys[key][1]}" if key in keys else path

    def get(key: str) -> str:
        return keys[key][0] if key in keys else ""

    actions: dict[str, str] = {}
    if get("KILL_ROUTE"):
        actions["route"] = _spec("route", _route_args(get("KILL_ROUTE"), where("KILL_ROUTE")))
    if get("KILL_HOSTS_DENY"):
        actions["hosts-deny"] = _spec("hosts-deny", _hosts_deny_args(get("KILL_HOSTS_DENY"), where("KILL_HOSTS_DENY")))
    run_first = get("KILL_RUN_CMD_FIRST").strip() == "1"
    script = _spec("script", _script_args(get("KILL_RUN_CMD"), run_first, where("KILL_RUN_CMD"))) \
        if get("KILL_RUN_CMD") else ""
    out = [f"# Imported from {path} by `portsentinel import-portsentry`.", ""]
    for proto in ("tcp", "udp"):
        key = f"BLOCK_{proto.upper()}"
        mode = get(key).strip() or "1"
        if mode not in ("0", "1", "2"):
            raise PortsentryImportError(f"{where(key)}: {key}: expected 0, 1 or 2, got {mode!r}")
        chosen: list[str] = []
        if mode == "1":
            chosen = [a for a in (actions.get("route"), actions.get("hosts-deny")) if a]
            if script:
                chosen.append(script)
        elif mode == "2" and script:
            chosen = [script]
        meaning = {"0": "log only", "1": "block and run KILL_RUN_CMD", "2": "only run KILL_RUN_CMD"}[mode]
        out += [f"# {key}={mode}: {meaning}", f"[portsentry-{proto}]", "enabled = true",
                f"filter = portsentinel-{proto}", f"bantime = {bantime}", "bantime.increment = false"]
        out.append("action = " + ("\n         ".join(chosen) if chosen else ""))
        out.append("")
    return "\n".join(out)
