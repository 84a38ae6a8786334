"""fleet.conf: the fleet daemon's settings, fail2ban's shape (``fleet.conf`` < ``fleet.local``), one typed object.

Reading does no I/O beyond the two files; every error names ``file:line: key:`` and says why (the same list
``portsentinel check-config`` prints). Keys and defaults: docs/fleet.md, "fleet.conf".
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from portsentinel.common import values

from .keys import valid_name

SECTION = "fleet"
DEFAULT_PATH = "/etc/portsentinel/fleet.conf"
ANY = "*"


class ConfigError(ValueError):
    """One or more errors, each ``file:line: key: reason``."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


@dataclass(frozen=True)
class FleetConfig:
    enabled: bool = False
    host: str = ""
    servers: tuple[str, ...] = ()
    nkey_seed: str = ""
    ca: str = ""
    bucket: str = "portsentinel_bans"
    bucket_max_age: float = 30 * 86400.0
    #: Trusted origin hosts; None: every host with a credential (``*``).
    origins: frozenset[str] | None = None
    unban_origins: frozenset[str] | None = None
    origin_rate: int = 600
    origin_max: int = 100_000
    #: A remote ban's ``until`` at most this far ahead (seconds); beyond it the value is refused.
    maxtime: float = 30 * 86400.0
    heartbeat: float = 5.0
    spool_max: int = 100_000
    #: Where the responder's shared decisions are read: ``journal``, or the path of its JSON-lines decisions file.
    decisions: str = "journal"
    #: The responder's uid: journald's trusted ``_UID`` of its records, or the owner of its decisions file.
    responder_uid: int = 0
    state: str = "/var/lib/portsentinel-fleet/state.sqlite3"
    output: str = "/var/lib/portsentinel-fleet/remote.jsonl"
    output_size: int = 64 << 20
    wake: str = "/run/portsentinel-fleet/wake"
    responder_wake: str = "/run/portsentinel/wake.sock"
    status: str = "/run/portsentinel-fleet/status.json"
    sources: tuple[str, ...] = field(default=())

    def trusts(self, origin: str) -> bool:
        return self.origins is None or origin in self.origins

    def may_unban(self, origin: str) -> bool:
        return self.trusts(origin) and (self.unban_origins is None or origin in self.unban_origins)


_KEY = re.compile(r"([A-Za-z_][A-Za-z0-9_.-]*)\s*[=:]\s?(.*)")
_SIZE = re.compile(r"([0-9]{1,12})\s*([kmg]?)", re.IGNORECASE)


def _strip_comment(value: str) -> str:
    """fail2ban's inline comment: `` #`` or `` ;`` after the value."""
    return re.split(r"\s[#;]", value, maxsplit=1)[0].strip()


def read_ini(path: str, text: str, into: dict[str, tuple[str, str]], errors: list[str]) -> None:
    """The ``[fleet]`` section's keys of one file -> ``into[key] = (value, "file:line")``; other sections ignored."""
    section = ""
    last = ""
    for number, line in enumerate(text.splitlines(), 1):
        where = f"{path}:{number}"
        stripped = line.strip()
        if not stripped or stripped[0] in "#;":
            continue
        if line[0] in " \t" and last and section == SECTION:  # a continuation line
            value, origin = into[last]
            into[last] = (f"{value} {_strip_comment(stripped)}".strip(), origin)
            continue
        if stripped.startswith("["):
            if not stripped.endswith("]"):
                errors.append(f"{where}: bad section header {stripped[:60]!r}")
            section, last = stripped[1:-1].strip(), ""
            continue
        match = _KEY.fullmatch(stripped)
        if not match:
            errors.append(f"{where}: expected 'key = value', not {stripped[:60]!r}")
            continue
        if section == SECTION:
            last = match[1]
            into[last] = (_strip_comment(match[2]), where)


def _names(text: str) -> frozenset[str] | None:
    words = list(values.tokens(text))
    if words == [ANY]:
        return None
    bad = [w for w in words if not valid_name(w)]
    if bad or not words:
        raise ValueError(f"{(bad or [''])[0]!r} is not a host name ([A-Za-z0-9_-]); or * for every host")
    return frozenset(words)


def _server(token: str) -> str:
    url = urlsplit(token)
    if url.scheme not in ("tls", "nats") or not url.hostname or url.path or url.query or url.username:
        raise ValueError(f"{token!r} is not tls://HOST:PORT (or nats://HOST:PORT without TLS)")
    try:
        port = url.port
    except ValueError:
        port = None
    if port is None:
        raise ValueError(f"{token!r}: name the port (4222)")
    return token


def _count(text: str, *, low: int = 1) -> int:
    if not text.isdigit() or int(text) < low:
        raise ValueError(f"{text!r} is not a whole number >= {low}")
    return int(text)


def _size(text: str) -> int:
    match = _SIZE.fullmatch(text)
    if not match or int(match[1]) == 0:
        raise ValueError(f"{text!r} is not a size (bytes, or a number with k, M or G)")
    return int(match[1]) << {"": 0, "k": 10, "m": 20, "g": 30}[match[2].lower()]


def _path(text: str) -> str:
    if not text.startswith("/"):
        raise ValueError(f"{text!r} is not an absolute path")
    return text


def _decisions(text: str) -> str:
    return text if text == "journal" else _path(text)


_PARSERS = {
    "enabled": lambda t: values.boolean(t),
    "host": lambda t: t if not t or valid_name(t) else _raise(f"{t!r} is not a host name ([A-Za-z0-9_-], 1-64)"),
    "servers": lambda t: tuple(_server(s) for s in values.tokens(t)) or _raise("no server given"),
    "nkey_seed": _path,
    "ca": lambda t: t and _path(t),
    "bucket": lambda t: t if valid_name(t) else _raise(f"{t!r} is not a bucket name ([A-Za-z0-9_-])"),
    "bucket_max_age": lambda t: values.duration(t),
    "origins": _names,
    "unban_origins": _names,
    "origin_rate": _count,
    "origin_max": _count,
    "maxtime": lambda t: values.duration(t),
    "heartbeat": lambda t: values.duration(t) if values.duration(t) >= 0.1 else _raise("at least 0.1s"),
    "spool_max": _count,
    "decisions": _decisions,
    "responder_uid": lambda t: _count(t, low=0),
    "state": _path,
    "output": _path,
    "output_size": _size,
    "wake": _path,
    "responder_wake": lambda t: t and _path(t),
    "status": _path,
}


def _raise(reason: str) -> object:
    raise ValueError(reason)


_REF = re.compile(r"%\(([A-Za-z_][A-Za-z0-9_]*)\)s")


def _interpolate(raw: dict[str, tuple[str, str]], text: str, depth: int = 0) -> str:
    """fail2ban's ``%(key)s``: another key of the section (nested up to 5 deep)."""
    def one(match: re.Match[str]) -> str:
        if depth >= 5 or match[1] not in raw:
            raise ValueError(f"%({match[1]})s: {'nested too deep' if depth >= 5 else 'no such key'}")
        return _interpolate(raw, raw[match[1]][0], depth + 1)

    return _REF.sub(one, text)


def parse(raw: dict[str, tuple[str, str]], sources: tuple[str, ...] = ()) -> FleetConfig:
    """Typed settings from the ``[fleet]`` keys (value, ``file:line``); ConfigError lists every bad key."""
    errors: list[str] = []
    settings: dict[str, object] = {}
    for name, (text, where) in raw.items():
        try:
            text = _interpolate(raw, text)
        except ValueError as exc:
            errors.append(f"{where}: {name}: {exc}")
            continue
        parser = _PARSERS.get(name)
        if parser is None:
            errors.append(f"{where}: {name}: unknown key (known: {', '.join(sorted(_PARSERS))})")
            continue
        try:
            settings[name] = parser(text)
        except ValueError as exc:
            errors.append(f"{where}: {name}: {exc}")
    cfg = FleetConfig(**settings, sources=sources)  # type: ignore[arg-type]
    if cfg.enabled and not errors:
        for name in ("host", "servers"):
            if not getattr(cfg, name):
                errors.append(f"{sources[-1] if sources else '<fleet.conf>'}: {name}: required when enabled")
    if errors:
        raise ConfigError(errors)
    return cfg


def load(path: str = DEFAULT_PATH) -> FleetConfig:
    """fleet.conf and, beside it, fleet.local (only the changed keys); a missing fleet.conf is an error."""
    raw: dict[str, tuple[str, str]] = {}
    errors: list[str] = []
    sources: list[str] = []
    local = os.path.splitext(path)[0] + ".local"
    for name in (path, local):
        try:
            with open(name, encoding="utf-8") as fh:
                text = fh.read()
        except FileNotFoundError:
            if name == path:
                raise ConfigError([f"{path}: no such file"]) from None
            continue
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError([f"{name}: cannot read: {exc}"]) from None
        sources.append(name)
        read_ini(name, text, raw, errors)
    if errors:
        raise ConfigError(errors)
    return parse(raw, tuple(sources))


def describe(cfg: FleetConfig) -> str:
    """One line for ``check-config`` and ``portsentinel-fleet --check``."""
    if not cfg.enabled:
        return f"fleet: {cfg.sources[-1] if cfg.sources else DEFAULT_PATH}: OK (disabled)"
    origins = "every host" if cfg.origins is None else ", ".join(sorted(cfg.origins))
    return (f"fleet: {', '.join(cfg.sources)}: OK; host {cfg.host}, servers {', '.join(cfg.servers)}, "
            f"bucket {cfg.bucket}; trusts {origins}; at most {cfg.origin_rate} bans a minute and "
            f"{cfg.origin_max} active per origin")
