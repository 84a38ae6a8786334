"""Per-source probe tracking: a time window, SCAN_TRIGGER, distinct ports, bounded memory.

A source is a network and a protocol (the key is the raw address, masked to the configured prefix — an IPv6
/64 by default, an IPv4 address — plus one protocol byte): a TCP scan and a UDP scan from one host are two
scans, as under PortSentry's separate TCP and UDP sentries, and a scanner rotating through the addresses of
its /64 is one source. :func:`masker` builds the masking function.

Pure: the caller passes the time (monotonic seconds). Sources are kept in least-recently-seen order and
the oldest is evicted beyond ``max_sources``; evictions are counted.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

_EXACT_PORTS = 64  # distinct ports kept in a set before switching to a bitmap
_BITMAP_BYTES = (2 * 65536) // 8  # one bit per (proto, port)


def masker(prefix4: int = 32, prefix6: int = 64, near: Collection[bytes] = ()) -> Callable[[bytes], bytes]:
    """raw 4- or 16-byte address → the raw address of its network (``prefix4`` / ``prefix6`` bits), or the address
    itself when its network is in ``near`` (the caller keeps it current: the networks of the host's own addresses,
    its LAN, whose hosts are counted one by one)."""
    masks = {4: (1 << 32) - (1 << (32 - prefix4)), 16: (1 << 128) - (1 << (128 - prefix6))}
    cut6, pad6 = prefix6 // 8, bytes(16 - prefix6 // 8)

    def net(raw: bytes) -> bytes:
        n = len(raw)
        if n == 16 and not prefix6 % 8:
            m = raw[:cut6] + pad6
        elif n == 4 and prefix4 == 32:
            return raw
        else:
            m = (int.from_bytes(raw, "big") & masks.get(n, -1)).to_bytes(n, "big")
        return raw if m in near else m

    return net


@dataclass(slots=True)
class SourceState:
    """What is known about one source."""

    key: bytes
    first: float
    last: float
    hits: int = 0
    ports: set[int] = field(default_factory=set)
    bitmap: bytearray | None = None
    nports: int = 0
    ports_exact: bool = True
    triggered: bool = False
    reported_hits: int = 0
    last_report: float = 0.0
    # The probe that crossed the trigger (what the scan record names): its source address (the key holds the
    # network), destination, protocol, port...
    src: bytes = b""
    dst: bytes = b""
    proto: int = 0
    port: int = 0
    scan: str = ""
    mode: str = ""
    ifindex: int = 0
    verified: bool = False


class Tracker:
    """Counts probes per source and says when a source crosses the trigger or is due a summary."""

    def __init__(self, *, trigger: int, window: float, summary_interval: float, max_sources: int,
                 max_bitmaps: int = 2048, proto_trigger: int = 4) -> None:
        self.trigger = trigger
        #: The IP-protocol sentry's trigger (protocol code 256): on distinct protocol numbers, not on probes.
        self.proto_trigger = proto_trigger
        self.window = window
        self.summary_interval = summary_interval
        self.max_sources = max_sources
        self.max_bitmaps = max_bitmaps
        self.bitmaps = 0
        self.evictions = 0
        self._sources: OrderedDict[bytes, SourceState] = OrderedDict()
        #: The state of a key, or None: the table's own ``get`` (a C call on the hot path; the table is only
        #: ever changed in place, never replaced).
        self.get: Callable[[bytes], SourceState | None] = self._sources.get
        self._triggered: dict[bytes, SourceState] = {}
        self._finished: list[SourceState] = []
        #: Protocol bytes (a key's last byte) of every source ever reported, for :meth:`rearm`.
        self._protos: set[int] = set()

    def __len__(self) -> int:
        return len(self._sources)

    def hit(self, key: bytes, dst: bytes, proto: int, port: int, scan: str, mode: str, ifindex: int,
            verified: bool, now: float) -> SourceState | None:
        """Count one probe. Returns the source's state when this probe makes it cross the trigger."""
        st = self._sources.get(key)
        if st is None:
            st = SourceState(key, now, now)
            self._sources[key] = st
            if len(self._sources) > self.max_sources:
                self._evict()
        else:
            self._sources.move_to_end(key)
            if not st.triggered and now - st.first > self.window:
                self._reset(st, now)
        st.last = now
        st.hits += 1
        self._add_port(st, port + 65536 if proto == 17 else port)
        if verified:
            st.verified = True
        if st.triggered or (st.nports <= self.proto_trigger if proto == 256 else st.hits <= self.trigger):
            return None
        st.dst, st.proto, st.port, st.scan, st.mode, st.ifindex = dst, proto, port, scan, mode, ifindex
        return st

    def hit_again(self, st: SourceState, code: int, now: float) -> None:
        """:meth:`hit` for the flood case, without the lookup: one more probe from ``st``, which must be the
        state of the key the previous ``hit`` or ``hit_again`` counted (so it is already the most recently
        seen source: nothing to reorder) and already triggered (so no window reset and nothing to return).

        ``code`` is the port, plus 65536 for UDP. The caller keeps the state between calls and must forget it
        whenever anything else may have touched the tracker (another source's hit, :meth:`due`, a reload).
        """
        st.last = now
        st.hits += 1
        bm = st.bitmap
        if bm is not None:  # _add_port's bitmap case, inline: a flood with more than 64 ports ends up here
            byte, bit = code >> 3, 1 << (code & 7)
            if not bm[byte] & bit:
                bm[byte] |= bit
                st.nports += 1
        else:
            self._add_port(st, code)

    def hit_run(self, st: SourceState, codes: list[int], now: float) -> None:
        """:meth:`hit_again` for each of ``codes`` in order, in one call: a run of probes from one source
        (the hot path collects them and calls this when the source changes, before anything else touches the
        tracker, or at the end of its batch). ``now`` is the time of the run's last probe."""
        if not codes:
            return
        st.last = now
        st.hits += len(codes)
        add_port = self._add_port
        for code in codes:
            bm = st.bitmap
            if bm is None:
                add_port(st, code)
            else:  # _add_port's bitmap case, inline
                byte, bit = code >> 3, 1 << (code & 7)
                if not bm[byte] & bit:
                    bm[byte] |= bit
                    st.nports += 1

    def mark_reported(self, st: SourceState, now: float) -> None:
        """The caller wrote the scan record: further probes fold into summaries."""
        st.triggered = True
        st.reported_hits = st.hits
        st.last_report = now
        self._triggered[st.key] = st
        self._protos.add(st.key[-1])

    # ----------------------------------------------------------------- re-arm (the source's ban ended)
    def rearm(self, addr: bytes) -> list[SourceState]:
        """The ban of ``addr`` (a raw address) ended: forget the source under every protocol it was reported
        for, so that its next probe counts from zero and, crossing the trigger, is a new decision (a fresh scan
        record), exactly as on its first probe. A source not reported yet keeps counting.

        Returns the forgotten states; those with probes not yet reported (``hits > reported_hits``) are owed
        a final summary.
        """
        out = []
        for proto in self._protos:
            key = addr + bytes((proto,))
            if key in self._triggered:
                out.append(self._drop(key))
        return out

    def rearm_networks(self, networks: list[tuple[int, int, int]], *, everything: bool = False
                       ) -> list[SourceState]:
        """:meth:`rearm` for every reported source inside one of ``networks`` (address length, first, last as
        integers), or for every reported source. One pass over the reported sources."""
        keys = []
        for key in self._triggered:
            if everything:
                keys.append(key)
                continue
            size, n = len(key) - 1, int.from_bytes(key[:-1], "big")
            if any(length == size and lo <= n <= hi for length, lo, hi in networks):
                keys.append(key)
        return [self._drop(key) for key in keys]

    def due(self, now: float) -> list[tuple[str, SourceState]]:
        """Summaries due now and sources that went quiet, as ("summary", state) pairs.

        A triggered source gets a summary every ``summary_interval`` while it keeps probing, and a final one
        when it has been quiet for ``window`` seconds (or was evicted) with probes not yet reported.
        """
        out: list[tuple[str, SourceState]] = [("summary", st) for st in self._finished
                                               if st.hits > st.reported_hits]
        self._finished.clear()
        while self._sources:
            key, st = next(iter(self._sources.items()))
            if now - st.last <= self.window:
                break
            self._drop(key)
            if st.triggered and st.hits > st.reported_hits:
                out.append(("summary", st))
        for st in self._triggered.values():
            if st.hits > st.reported_hits and now - st.last_report >= self.summary_interval:
                out.append(("summary", st))
        for _, st in out:
            st.reported_hits = st.hits
            st.last_report = now
        return out

    def _reset(self, st: SourceState, now: float) -> None:
        st.first = now
        st.hits = 0
        st.ports.clear()
        if st.bitmap is not None:
            st.bitmap = None
            self.bitmaps -= 1
        st.nports = 0
        st.ports_exact = True
        st.verified = False

    def _add_port(self, st: SourceState, code: int) -> None:
        bm = st.bitmap
        if bm is not None:
            byte, bit = code >> 3, 1 << (code & 7)
            if not bm[byte] & bit:
                bm[byte] |= bit
                st.nports += 1
            return
        if code in st.ports:
            return
        if len(st.ports) < _EXACT_PORTS:
            st.ports.add(code)
            st.nports += 1
            return
        if self.bitmaps < self.max_bitmaps:
            bm = bytearray(_BITMAP_BYTES)
            for c in st.ports:
                bm[c >> 3] |= 1 << (c & 7)
            bm[code >> 3] |= 1 << (code & 7)
            st.bitmap = bm
            st.ports.clear()
            st.nports += 1
            self.bitmaps += 1
        else:
            st.ports_exact = False  # count is a lower bound from here on

    def _drop(self, key: bytes) -> SourceState:
        st = self._sources.pop(key)
        self._triggered.pop(key, None)
        if st.bitmap is not None:
            self.bitmaps -= 1
        return st

    def _evict(self) -> None:
        key = next(iter(self._sources))
        st = self._drop(key)
        self.evictions += 1
        if st.triggered:
            self._finished.append(st)
