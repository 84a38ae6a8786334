"""One grammar each for the values both stages' configurations use: durations, booleans, ports, networks.

Pure: text in, value out. A ``ValueError``'s message is the reason alone; the caller's reader adds
``file:line: key:`` (the detector's ``Value.error``, the responder's ``IniError``/``TrapError``).
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Iterator

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_DURATION = re.compile(r"([0-9]{1,12})(\.[0-9]{1,9})?\s*([smhdw]?)", re.ASCII | re.IGNORECASE)
_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_TRUE = frozenset(("yes", "true", "on", "1", "enabled"))
_FALSE = frozenset(("no", "false", "off", "0", "disabled"))
_NUMBER = re.compile(r"[0-9]{1,5}", re.ASCII)
_SPLIT = re.compile(r"[,\s]+")
FOREVER = -1.0


def duration(text: str, *, zero: bool = False, forever: bool = False) -> float:
    """Seconds: a number with an optional unit s, m, h, d or w (``60``, ``10m``, ``1.5h``, ``1d``).

    Above zero, or also ``0`` with ``zero``; ``-1`` (:data:`FOREVER`) only with ``forever``.
    """
    token = text.strip()
    if forever and token in ("-1", "-1.0"):
        return FOREVER
    match = _DURATION.fullmatch(token.removeprefix("-"))
    if match is None:
        extra = ", or -1 for forever" if forever else ""
        raise ValueError(f"{token!r} is not a duration: seconds, or a number with s, m, h, d or w (60, 10m, 1d){extra}")
    if token.startswith("-"):
        only = " (only -1, forever)" if forever else ""
        raise ValueError(f"{token} is negative: a duration must be {'zero or more' if zero else 'above zero'}{only}")
    seconds = float(match[1] + (match[2] or "")) * _UNITS[match[3].lower()]
    if not math.isfinite(seconds) or seconds < 0 or (seconds == 0 and not zero):
        raise ValueError(f"{token} is not a usable duration: must be {'zero or more' if zero else 'above zero'}")
    return seconds


def boolean(text: str, *, empty: bool | None = None) -> bool:
    """yes/no, true/false, on/off, 1/0, enabled/disabled (any case); an empty value is ``empty`` when given."""
    token = text.strip().lower()
    if token in _TRUE:
        return True
    if token in _FALSE:
        return False
    if not token and empty is not None:
        return empty
    raise ValueError(f"{text.strip()!r} is not a boolean: use yes/no, true/false, on/off or 1/0")


def tokens(text: str) -> Iterator[str]:
    """The words of a list value: comma and/or whitespace separated."""
    return (t for t in _SPLIT.split(text.strip()) if t)


def port(token: str) -> int:
    """One port number, 1..65535."""
    if not _NUMBER.fullmatch(token):
        raise ValueError(f"bad port {token!r}: not a number")
    number = int(token)
    if not 1 <= number <= 65535:
        raise ValueError(f"bad port {number}: ports are 1..65535")
    return number


def port_span(token: str) -> range:
    """A port or a range ``FIRST-LAST`` (``1-1024``), as a range of ports."""
    start, dash, end = token.partition("-")
    if not dash:
        number = port(token)
        return range(number, number + 1)
    if not (_NUMBER.fullmatch(start) and _NUMBER.fullmatch(end)):
        raise ValueError(f"bad port range {token!r}: expected FIRST-LAST, e.g. 1-1024")
    low, high = port(start), port(end)
    if low > high:
        raise ValueError(f"bad port range {token!r}: {low} is above {high}")
    return range(low, high + 1)


def network(token: str, *, strict: bool = True) -> IPNetwork:
    """An IPv4 or IPv6 address or network (``10.0.0.0/8``, ``2001:db8::/32``, ``192.0.2.7``).

    Scoped IPv6 addresses (``%zone``) are refused. With ``strict`` a network with host bits set is refused;
    otherwise it is masked.
    """
    if "%" in token:
        raise ValueError(f"{token!r}: scoped IPv6 addresses (%zone) are not supported here")
    try:
        return ipaddress.ip_network(token, strict=True)
    except ValueError:
        pass
    try:
        masked = ipaddress.ip_network(token, strict=False)
    except ValueError:
        raise ValueError(f"{token!r} is not an IPv4 or IPv6 address or network") from None
    if strict:
        raise ValueError(f"{token} has host bits set: write {masked} for the network, "
                         f"or the address alone for one host")
    return masked


#: Where a metrics endpoint binds when the setting names only a port.
DEFAULT_HOST = "127.0.0.1"


def listen(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[V6ADDR]:PORT`` or ``PORT`` → (address, port). The host must be an IP address (no name
    lookups in a daemon's configuration). Raises ValueError with the reason."""
    token = text.strip()
    host, port_text = DEFAULT_HOST, token
    if token.startswith("["):
        close = token.find("]")
        if close < 0 or token[close + 1:close + 2] != ":":
            raise ValueError(f"{token!r}: expected [IPV6]:PORT")
        host, port_text = token[1:close], token[close + 2:]
    elif ":" in token:
        host, _, port_text = token.rpartition(":")
        if ":" in host:
            raise ValueError(f"{token!r}: write an IPv6 address in brackets, [::1]:9781")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{token!r}: {host!r} is not an IP address") from None
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"{token!r}: port must be 1..65535")
    return host, int(port_text)
