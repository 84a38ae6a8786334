"""The re-arm message: the responder tells the detector that bans ended, so their sources are new decisions.

A detector reports a source once (a ``scan`` record) and folds its later probes into ``summary`` records while
it keeps probing. When the ban that record caused ends (it expired, an admin lifted it, a flushed firewall could
not get it back), the responder sends the detector one datagram naming the sources, and the detector forgets
them: the next probe from such a source is reported as a fresh ``scan``, exactly like a first probe, and the
jails ban it again with first-ban latency (docs/responder.md, "A scanner that comes back").

The datagram is ASCII, at most :data:`MAX_DATAGRAM` bytes, tokens separated by single spaces::

    PSREARM1 <target> [<target> ...]

A target is a canonical address (``198.51.100.7``, ``2001:db8::7``; IPv4 never written v4-mapped), a canonical
network (``2001:db8:1:2::/64``, host bits zero), or ``*`` alone (every source: the sender lost track). At most
:data:`MAX_TARGETS` targets. The detector treats the datagram as hostile input: anything else is rejected whole
and counted. This module is pure (no I/O) and imports neither stage.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field

MAGIC = b"PSREARM1"
#: Largest datagram sent or accepted.
MAX_DATAGRAM = 4096
#: Most targets in one datagram.
MAX_TARGETS = 96
ALL = "*"

_TOKEN_BYTES = frozenset(b"0123456789abcdefABCDEF.:/*")


class RearmError(ValueError):
    """A datagram that is not a valid re-arm message; the text says why (no attacker text is echoed raw)."""


@dataclass
class Rearm:
    """What one message asks: every source, or these addresses (packed) and networks (length, first, last)."""

    everything: bool = False
    addresses: list[bytes] = field(default_factory=list)
    networks: list[tuple[int, int, int]] = field(default_factory=list)


def canonical_target(text: str) -> str:
    """``text`` as a target in canonical form (address, network, or ``*``); ValueError otherwise.

    The sender's side: a v4-mapped IPv6 address becomes IPv4, a network loses nothing but must have its host
    bits zero.
    """
    if text == ALL:
        return ALL
    if "/" in text:
        net = ipaddress.ip_network(text, strict=True)
        return str(net)
    addr = ipaddress.ip_address(text)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    return str(addr)


def encode(targets: Iterable[str]) -> list[bytes]:
    """Datagrams naming ``targets`` (already canonical: see :func:`canonical_target`), each within the limits.

    ``*`` among them makes one datagram ``PSREARM1 *``: every source is re-armed anyway.
    """
    items = list(dict.fromkeys(targets))
    if ALL in items:
        return [MAGIC + b" *"]
    out: list[bytes] = []
    cur: list[bytes] = []
    size = len(MAGIC)
    for t in items:
        b = t.encode("ascii")
        if cur and (len(cur) >= MAX_TARGETS or size + 1 + len(b) > MAX_DATAGRAM):
            out.append(b" ".join([MAGIC, *cur]))
            cur, size = [], len(MAGIC)
        cur.append(b)
        size += 1 + len(b)
    if cur:
        out.append(b" ".join([MAGIC, *cur]))
    return out


def decode(data: bytes) -> Rearm:
    """The request in one datagram; :class:`RearmError` for anything but an exact, canonical message."""
    if len(data) > MAX_DATAGRAM:
        raise RearmError(f"datagram of {len(data)} bytes (at most {MAX_DATAGRAM})")
    tokens = data.split(b" ")
    if tokens[0] != MAGIC:
        raise RearmError("does not start with PSREARM1")
    targets = tokens[1:]
    if not targets:
        raise RearmError("no target")
    if len(targets) > MAX_TARGETS:
        raise RearmError(f"{len(targets)} targets (at most {MAX_TARGETS})")
    out = Rearm()
    for n, raw in enumerate(targets, start=1):
        if not raw or len(raw) > 43 or not _TOKEN_BYTES.issuperset(raw):
            raise RearmError(f"target {n}: not an address, a network or '*'")
        text = raw.decode("ascii")
        if text == ALL:
            if len(targets) != 1:
                raise RearmError("'*' must be the only target")
            out.everything = True
            continue
        try:
            canonical = canonical_target(text)
        except ValueError:
            raise RearmError(f"target {n}: not an address, a network or '*'") from None
        if canonical != text:
            raise RearmError(f"target {n}: not in canonical form ({canonical})")
        if "/" in text:
            net = ipaddress.ip_network(text)
            out.networks.append((4 if net.version == 4 else 16, int(net.network_address),
                                 int(net.broadcast_address)))
        else:
            out.addresses.append(ipaddress.ip_address(text).packed)
    return out
