"""Admit or drop: whether a probe counts against its source. One verdict for every path (the capture ring's
TCP and UDP probes, its SCTP and IP-protocol probes, the classic sentries' connections).

A probe is dropped when it is not for this host (``NOT_LOCAL``), when its port has a socket (``IN_USE``: a
service's own traffic), when it is an ACK or FIN/ACK to a free port of the ephemeral range (``LATE_ACK``: the
late end of one of the host's own connections), or when its source is on the ignore list or is the host
itself (``IGNORED``). Otherwise it is admitted (``ADMIT``, 0).

The verdict reads a :class:`HostView`: the host's addresses and ports in use as last read, and when. When a
fact it needs may be stale, the verdict says which to read again (``REFRESH_*``); the caller reads it
(service I/O, ``pipeline.Pipeline.settle``), stores it with the same ``now``, and asks again, which then
decides. No I/O here; the clock is passed in.
"""

from __future__ import annotations

from collections.abc import Iterable

from portsentinel.detector.config.model import IPNetwork

TCP, UDP = 6, 17

#: Final verdicts: 0 admits, the others name why a probe is dropped (an index into a per-reason tally).
ADMIT, NOT_LOCAL, IN_USE, LATE_ACK, IGNORED = range(5)
#: Verdicts that ask for a fact to be read again (all >= REFRESH).
REFRESH = 5
REFRESH_LOCAL, REFRESH_LISTENERS, REFRESH_SOCKETS = 5, 6, 7
#: Names of the final verdicts (the service's counters of the same names).
DROPS = ("admitted", "not_local", "in_use", "late_ack", "ignored")

#: An unknown destination address: read the host's addresses again when the last read is this old (seconds).
LOCAL_STALE = 1.0
#: A free port: read the listening sockets again when the last read is older than this (a service may have
#: just started), and for an ACK or FIN/ACK every socket (a connection may have just opened).
IN_USE_STALE = 0.05
#: Entries of the ignore cache before it is emptied (a spoofed flood must not grow it without bound).
IGNORE_CACHE_MAX = 100_000


class HostView:
    """The host as the verdict sees it. The service stores what it reads (:meth:`set_local`,
    :meth:`set_in_use`); the hot path reads the attributes directly."""

    def __init__(self, ignore: Iterable[IPNetwork] = (), ignore_self: bool = True,
                 ephemeral: tuple[int, int] = (32768, 60999)) -> None:
        self.local: frozenset[bytes] = frozenset()
        self.local_at = 0.0
        self.in_use: dict[int, frozenset[int]] = {TCP: frozenset(), UDP: frozenset()}
        self.in_use_at: dict[int, float] = {TCP: 0.0, UDP: 0.0}
        self.connected: frozenset[int] = frozenset()  # TCP ports with any socket at the last full read
        self.full_at = 0.0
        self.eph_lo, self.eph_hi = ephemeral
        self.ignore_cache: dict[bytes, bool] = {}
        self.ignore_self = ignore_self
        self.ignore_ranges: tuple[tuple[int, int, int], ...] = ()
        self.set_ignore(ignore, ignore_self)

    # ----------------------------------------------------------------- facts
    def set_ignore(self, ignore: Iterable[IPNetwork], ignore_self: bool) -> None:
        """The ignore list as (address length, first, last) integer ranges: no ipaddress object per source."""
        self.ignore_ranges = tuple((4 if net.version == 4 else 16, int(net.network_address),
                                    int(net.broadcast_address)) for net in ignore)
        self.ignore_self = ignore_self
        self.ignore_cache.clear()

    def set_local(self, addresses: frozenset[bytes], now: float) -> None:
        self.local = addresses
        self.local_at = now
        self.ignore_cache.clear()  # ignore_self reads them

    def set_in_use(self, proto: int, ports: frozenset[int], now: float, *, listening_only: bool = False) -> None:
        """Ports with a socket, read at ``now``. For TCP, ``listening_only`` means ``ports`` are the listeners
        alone: the connected sockets of the last full read are kept."""
        if listening_only and proto == TCP:
            self.in_use[proto] = self.connected | ports
        else:
            self.in_use[proto] = ports
            if proto == TCP:
                self.connected = ports
                self.full_at = now
        self.in_use_at[proto] = now

    # ----------------------------------------------------------------- verdicts
    def ignored(self, src: bytes) -> bool:
        hit = self.ignore_cache.get(src)
        if hit is None:
            if len(self.ignore_cache) > IGNORE_CACHE_MAX:
                self.ignore_cache.clear()
            if self.ignore_self and src in self.local:
                hit = True
            else:
                n, size = int.from_bytes(src, "big"), len(src)
                hit = any(size == length and lo <= n <= hi for length, lo, hi in self.ignore_ranges)
            self.ignore_cache[src] = hit
        return hit

    def probe(self, src: bytes, dst: bytes, proto: int, port: int, scan: str, now: float) -> int:
        """A TCP or UDP probe from the capture (``scan`` as classified): a final verdict, or a REFRESH_*."""
        if dst not in self.local:
            return REFRESH_LOCAL if now - self.local_at >= LOCAL_STALE else NOT_LOCAL
        if port in self.in_use[proto]:
            return IN_USE
        if now - self.in_use_at[proto] > IN_USE_STALE:
            return REFRESH_LISTENERS
        if scan == "ack" or scan == "maimon":
            if self.eph_lo <= port <= self.eph_hi:
                return LATE_ACK
            if now - self.full_at > IN_USE_STALE:
                return REFRESH_SOCKETS
        hit = self.ignore_cache.get(src)
        if hit is None:
            hit = self.ignored(src)
        return IGNORED if hit else ADMIT

    def packet(self, src: bytes, dst: bytes, now: float) -> int:
        """A probe with no port of the host's own (SCTP's sentries have their own, an IP protocol has none):
        for this host, from a source not ignored. A final verdict, or REFRESH_LOCAL."""
        if dst not in self.local:
            return REFRESH_LOCAL if now - self.local_at >= LOCAL_STALE else NOT_LOCAL
        hit = self.ignore_cache.get(src)
        if hit is None:
            hit = self.ignored(src)
        return IGNORED if hit else ADMIT

    def connection(self, src: bytes) -> int:
        """A connection or datagram a classic sentry's own socket received: for this host and to a port the
        detector holds itself by construction, so only the source decides."""
        return IGNORED if self.ignored(src) else ADMIT
