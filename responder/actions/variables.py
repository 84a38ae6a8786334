"""The variables an action's templates see, validated once: :class:`BanVars`, the typed value of one ban's
variables (docs/actions.md lists them), and :func:`validate_vars` for the configuration's own values
(``[Init]`` and the jail's action arguments). Pure; the template language itself is responder.actions.render.

``ip`` must parse as an address (or, for a network ban, ADDRESS/PREFIX without host bits) and is replaced by
its canonical text; ``family`` and ``network`` (true for a network shorter than the family's full length: a
full-length one is its address) are derived from it; numbers are integers in range; ``proto``, ``scan`` and ``mode``
short lower-case words; ``matches`` text with control characters replaced; ``jail`` and ``name`` names; any other
configuration value text without a NUL byte.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import NamedTuple, Protocol

from portsentinel.record import canonical_network

#: Variables filled in per ban; validated, and never allowed in ``|args``.
BAN_VARS = frozenset({"ip", "family", "network", "port", "proto", "scan", "mode", "bantime", "failures", "time",
                      "matches"})
#: Documented variables; ``jail`` and ``name`` come from the jail's configuration.
DOCUMENTED_VARS = BAN_VARS | {"jail", "name"}

NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}\Z")
_TOKEN_RE = re.compile(r"[a-z0-9]{1,16}\Z")
_VAR_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_CTRL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_INT_RE = re.compile(r"-?[0-9]{1,20}")
MAX_MATCHES = 8192


class VarError(ValueError):
    """A variable whose value fails validation; ``name`` is the variable."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"{name}: {reason}")
        self.name = name


def _int(name: str, value: object, lo: int, hi: int) -> int:
    if isinstance(value, bool):
        raise VarError(name, "must be an integer")
    if isinstance(value, int):
        n = value
    elif isinstance(value, str) and _INT_RE.fullmatch(value.strip(" \t")):
        n = int(value.strip(" \t"))  # ASCII digits only: str.strip() and \d also take "\x1c" and other digits
    elif isinstance(value, float) and name == "time":
        n = int(value)
    else:
        raise VarError(name, f"must be an integer, got {str(value)[:40]!r}")
    if not lo <= n <= hi:
        raise VarError(name, f"{n} out of range {lo}..{hi}")
    return n


def _matches(value: object) -> str:
    if isinstance(value, str):
        text = value
    elif isinstance(value, Sequence) and all(isinstance(v, str) for v in value):
        text = "\n".join(value)
    else:
        raise VarError("matches", "must be text or a list of text")
    return _CTRL_RE.sub("?", text)[:MAX_MATCHES]


def _ip(value: object) -> str:
    try:
        return canonical_network(str(value))  # an address, or a network ban (ADDRESS/PREFIX)
    except ValueError:
        raise VarError("ip", f"not an IP address or network: {str(value)[:60]!r}") from None


def _token(name: str, value: object) -> str:
    if not isinstance(value, str) or not (value == "" or _TOKEN_RE.match(value)):
        raise VarError(name, f"must be a short lower-case word, got {str(value)[:40]!r}")
    return value


class BanLike(Protocol):
    """What :meth:`BanVars.of` reads of a ban (responder.core.bans.Ban; this module imports no core module)."""

    ip: str
    banned_at: float
    failures: int
    info: dict[str, str]
    matches: str

    @property
    def bantime(self) -> float: ...  # seconds, negative for a ban without end
    def remaining(self, now: float) -> float: ...  # seconds left at now (>= 0), negative for a ban without end


def family_of(ip: str) -> str:
    """``inet`` or ``inet6`` for a canonical address or network."""
    return "inet6" if ":" in ip else "inet"


class BanVars(NamedTuple):
    """One ban's template variables, validated when made (:meth:`of`, :meth:`parse`): ``ip`` canonical, ``family``
    derived from it, numbers in range, words checked. ``port`` None and empty words mean "not known": they are
    left out of :meth:`context`, so a template must say ``{{ port|default('') }}`` to use one that may be missing
    (PortSentry's ``$PORT$`` and ``$MODE$`` do). ``network`` is true when ``ip`` is a network (ADDRESS/PREFIX,
    shorter than the family's full length): the nftables action puts those in an interval set of their own.
    A named tuple: immutable, and cheap to make for 100,000 bans."""

    ip: str
    family: str
    bantime: int  # seconds, -1 for a ban without end
    failures: int
    time: int  # when the ban was made (epoch seconds)
    port: int | None = None
    proto: str = ""
    scan: str = ""
    mode: str = ""
    matches: str = ""
    network: bool = False

    @classmethod
    def of(cls, ban: BanLike, now: float, *, remaining: bool = False) -> BanVars:
        """The variables of ``ban``; ``remaining``: bantime is what is left of it at ``now`` (a restored ban),
        else its full length. Raises VarError naming the variable (e.g. a corrupt row's bantime)."""
        length = ban.remaining(now) if remaining else ban.bantime
        if length != length or length in (float("inf"), float("-inf")):
            raise VarError("bantime", f"not a number of seconds: {length}")
        bantime = -1 if length < 0 else _int("bantime", max(1, int(round(length))), -1, 10**10)
        info = ban.info
        port = info.get("port", "")
        ip = _ip(ban.ip)
        failures = ban.failures
        if type(failures) is not int or not 0 <= failures <= 10**9:  # the common case without a call
            failures = _int("failures", failures, 0, 10**9)
        words = [info.get(name, "") for name in ("proto", "scan", "mode")]
        for name, word in zip(("proto", "scan", "mode"), words, strict=True):
            if word:
                _token(name, word)
        return cls(ip, family_of(ip), bantime, failures, _int("time", int(ban.banned_at), 0, 10**11),
                   _int("port", port, 0, 65535) if port.isascii() and port.isdigit() else None,
                   words[0], words[1], words[2], _matches(ban.matches) if ban.matches else "", "/" in ip)

    @classmethod
    def parse(cls, values: Mapping[str, object]) -> BanVars:
        """Variables given by name (a test, the fuzzer, check-config): ``ip`` required, the others as in
        docs/actions.md; an unknown name is refused."""
        extra = set(values) - BAN_VARS
        if extra:
            raise VarError(sorted(extra)[0], "not a ban-time variable")
        if "ip" not in values:
            raise VarError("ip", "missing")
        ip = _ip(values["ip"])
        given = values.get("family")
        if given is not None and given != family_of(ip):
            raise VarError("family", f"{given!r} does not match ip {ip}")
        if "network" in values and values["network"] != ("/" in ip):
            raise VarError("network", f"{values['network']!r} does not match ip {ip}")
        port = values.get("port")
        return cls(ip=ip, family=family_of(ip), bantime=_int("bantime", values.get("bantime", -1), -1, 10**10),
                   failures=_int("failures", values.get("failures", 1), 0, 10**9),
                   time=_int("time", values.get("time", 0), 0, 10**11),
                   port=None if port is None or port == "" else _int("port", port, 0, 65535),
                   proto=_token("proto", values.get("proto", "")), scan=_token("scan", values.get("scan", "")),
                   mode=_token("mode", values.get("mode", "")), matches=_matches(values.get("matches", "")),
                   network="/" in ip)

    def context(self) -> dict[str, object]:
        """The variables by name, for the templates (names not known left out)."""
        out: dict[str, object] = {"ip": self.ip, "family": self.family, "network": self.network,
                                  "bantime": self.bantime, "failures": self.failures, "time": self.time}
        if self.port is not None:
            out["port"] = self.port
        for name in ("proto", "scan", "mode", "matches"):
            value = getattr(self, name)
            if value:
                out[name] = value
        return out


def validate_vars(values: Mapping[str, object]) -> dict[str, object]:
    """Check and normalise configuration variables (and, for check-config and the tests, documented ones given
    by name); raise VarError naming the first bad one.

    Documented variables are checked by kind; ``family`` is derived from ``ip`` (and must agree when
    given). Any other name must be an identifier with a text value (configuration: ``[Init]`` and the
    jail's action arguments), which is trusted but still confined to its word.
    """
    out: dict[str, object] = {}
    for name, value in values.items():
        if not _VAR_RE.match(name):
            raise VarError(name, "not a valid variable name")
        if name == "ip":
            out["ip"] = _ip(value)
        elif name in ("family", "network"):
            continue  # derived below
        elif name == "port":
            out[name] = _int(name, value, 0, 65535)
        elif name == "bantime":
            out[name] = _int(name, value, -1, 10**10)
        elif name == "failures":
            out[name] = _int(name, value, 0, 10**9)
        elif name == "time":
            out[name] = _int(name, value, 0, 10**11)
        elif name in ("proto", "scan", "mode"):
            out[name] = _token(name, value)
        elif name in ("jail", "name"):
            if not isinstance(value, str) or not NAME_RE.match(value):
                raise VarError(name, f"must match {NAME_RE.pattern}, got {str(value)[:40]!r}")
            out[name] = value
        elif name == "matches":
            out[name] = _matches(value)
        else:
            if not isinstance(value, str):
                raise VarError(name, "configuration values must be text")
            if "\x00" in value:
                raise VarError(name, "NUL byte")
            out[name] = value
    if "ip" in out:
        family = family_of(str(out["ip"]))
        given = values.get("family")
        if given is not None and given != family:
            raise VarError("family", f"{given!r} does not match ip {out['ip']}")
        out["family"] = family
        network = "/" in str(out["ip"])
        if "network" in values and values["network"] != network:
            raise VarError("network", f"{values['network']!r} does not match ip {out['ip']}")
        out["network"] = network
    elif "family" in values:
        if values["family"] not in ("inet", "inet6"):
            raise VarError("family", "must be inet or inet6")
        out["family"] = values["family"]
    return out
