"""The bucket's keys: ``<host>.<jail>.<addr>`` (docs/fleet.md, "The bucket"). Pure.

A key names who banned what: the origin host (which the server's per-host permissions enforce: a host may
publish only under its own name), the origin's jail, and the canonical address or network, encoded for a NATS
subject token: IPv4 ``a.b.c.d`` -> ``a-b-c-d``, IPv6 ``:`` -> ``_``, a network's ``/`` -> ``=``
(``2001:db8::/64`` -> ``2001_db8__=64``). ``<host>._unban.<addr>`` is a fleet-wide unban marker.

Parsing is strict: the address part must be exactly the encoding of a canonical address, so one ban has one key.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from portsentinel import record as R

#: The jail name of a fleet-wide unban marker (not a valid jail.conf section name: it starts with "_").
UNBAN_JAIL = "_unban"
_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}", re.ASCII)
_ADDR_TOKEN = re.compile(r"[0-9a-f_=-]{1,50}", re.ASCII)
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
#: The common key, a plain IPv4 address: host, jail and the token of a canonical dotted quad (each part without
#: leading zeros, at most 255), which is exactly an encoding :func:`decode_addr` accepts. Read by one match.
V4_KEY = re.compile(rf"([A-Za-z0-9_-]{{1,64}})\.([A-Za-z0-9_-]{{1,64}})\.((?:{_OCTET}-){{3}}{_OCTET})", re.ASCII)


class BadKey(ValueError):
    """A key that is not ``<host>.<jail>.<addr>`` in the bucket's grammar; the message says why."""


def valid_name(name: str) -> bool:
    """A host or jail name the bucket accepts: ``[A-Za-z0-9_-]{1,64}``."""
    return _NAME.fullmatch(name) is not None


def encode_addr(addr: str) -> str:
    """The key token of a canonical address or network (ValueError when ``addr`` is not one)."""
    canon = R.canonical_network(addr)
    if canon != addr:
        raise ValueError(f"{addr!r} is not canonical (write {canon})")
    if ":" in addr:
        return addr.replace(":", "_").replace("/", "=")
    return addr.replace(".", "-").replace("/", "=")


def decode_addr(token: str) -> str:
    """The canonical address or network a key token encodes; ValueError unless ``token`` is exactly its encoding."""
    if not _ADDR_TOKEN.fullmatch(token):
        raise ValueError(f"bad address token {token[:60]!r}")
    text = token.replace("_", ":") if "_" in token else token.replace("-", ".")
    text = text.replace("=", "/")
    try:
        canon = R.canonical_network(text)
    except ValueError:
        raise ValueError(f"bad address token {token[:60]!r}: not an address or network") from None
    if canon != text:
        raise ValueError(f"address token {token[:60]!r} is not canonical (expected {encode_addr(canon)})")
    return canon


class Key(NamedTuple):
    host: str
    jail: str
    addr: str

    @property
    def unban(self) -> bool:
        """A fleet-wide unban marker (``<host>._unban.<addr>``)."""
        return self.jail == UNBAN_JAIL

    def text(self) -> str:
        return f"{self.host}.{self.jail}.{encode_addr(self.addr)}"


def make_key(host: str, jail: str, addr: str) -> str:
    """The key of ``host``'s ban of ``addr`` in ``jail`` (ValueError on a bad name or address)."""
    if not valid_name(host):
        raise ValueError(f"bad host name {host[:70]!r}: [A-Za-z0-9_-], 1 to 64 characters")
    if not valid_name(jail):
        raise ValueError(f"bad jail name {jail[:70]!r}: [A-Za-z0-9_-], 1 to 64 characters")
    return Key(host, jail, addr).text()


def parse_key(text: str) -> Key:
    """A key in the bucket -> (host, jail, addr); BadKey naming what is wrong."""
    m = V4_KEY.fullmatch(text)
    if m is not None:
        host, jail, token = m.groups()
        return Key(host, jail, token.replace("-", "."))
    parts = text.split(".")
    if len(parts) != 3:
        raise BadKey(f"key {text[:120]!r}: expected <host>.<jail>.<addr>")
    host, jail, token = parts
    if not valid_name(host):
        raise BadKey(f"key {text[:120]!r}: bad host name")
    if not valid_name(jail):
        raise BadKey(f"key {text[:120]!r}: bad jail name")
    try:
        addr = decode_addr(token)
    except ValueError as exc:
        raise BadKey(f"key {text[:120]!r}: {exc}") from None
    return Key(host, jail, addr)
