"""IPv4 fragments and IPv6 fragment headers → the datagram the host's stack will see, as far as the detector
needs it (the first bytes of the transport header). Pure: the clock is passed in; bounded and counted.

The rules are Linux's (net/ipv4/ip_fragment.c, net/ipv6/reassembly.c, net/ipv4/inet_fragment.c), re-stated
here and checked against the running kernel in tests/integration/test_fragments.py:

- A queue per (source, destination, identification, protocol) for IPv4, (source, destination,
  identification) for IPv6. It lives from its first fragment for the host's timeout (ipfrag_time, 30 s;
  ip6frag_time, 60 s); later fragments do not extend it.
- Fragments are kept as *runs*: a fragment that starts where the highest one ends extends that run; any
  other new fragment starts a run of its own. A fragment wholly inside one run is a duplicate: dropped, the
  queue kept (the first data wins). A fragment that overlaps in any other way discards the whole datagram
  (RFC 5722 for IPv6; Linux does the same for IPv4 since 4.19).
- A last fragment (MF clear) fixes the length: one that ends before data already seen, or a second one with
  another end, discards the datagram; so does a non-last fragment reaching past a known end, and a fragment
  with no data. A non-last IPv4 fragment whose end is not a multiple of 8 is cut down to one; an IPv6 one
  is dropped (ICMPv6 parameter problem), the queue kept.
- IPv6 first fragment: it must hold every header through the transport header (TCP 20 bytes, UDP 8, other 1:
  RFC 8200 4.5), else it is dropped (ICMPv6 parameter problem code 3), the queue kept.
- At completion: ECN codepoints mixing not-ECT with ECT/CE discard the datagram; so does one over 65,535
  bytes. IPv4 ``ipfrag_max_dist``: a queue whose source has sent more than that many other fragments since
  its own last one is emptied and restarted (its timer too).

What the detector gets for a completed datagram is a small *synthetic unfragmented packet*: the first
fragment's addresses and protocol and the first :data:`HEAD` bytes of the transport payload, which
``packet.parse`` then reads like any other packet. A datagram Linux discards yields nothing (counted).
The TCP or UDP checksum of a reassembled datagram is verified when every fragment was captured whole (the
capture ring keeps ~450 bytes of each packet: every fragmenting scanner's fragments fit) and a failing datagram
is dropped, as the host drops it: a datagram the host discards gets no answer and tells the scanner nothing, so
it is counted, not reported. The IPv4 header checksum of each fragment is verified too.
"""

from __future__ import annotations

import mmap
import struct
from bisect import bisect_right
from collections import OrderedDict
from dataclasses import dataclass, fields

#: Transport bytes kept per datagram: TCP's flags are at 13, its fixed header is 20; SCTP's first chunk
#: type at 12.
HEAD = 32
#: Charged per queue and per run against ``max_bytes`` (measured order of magnitude of the Python objects).
ENTRY_COST = 400
RUN_COST = 72

_V4 = struct.Struct("!BBHHHBB2x4s4s")  # ver/ihl, tos, total length, id, frag word, ttl, proto, src, dst
_V6 = struct.Struct("!IHBx16s16s")  # ver/class/flow, payload length, next header, src, dst
_SYN4 = struct.Struct("!BBHHHBBH4s4s")
_SYN6 = struct.Struct("!IHBB16s16s")
_HOPOPTS, _ROUTING, _FRAGMENT, _AH, _DSTOPTS = 0, 43, 44, 51, 60
_MAX_EXT = 8
#: Bytes of transport header an IPv6 first fragment must hold (Linux's ipv6frag_thdr_truncated).
_V6_NEED = {6: 20, 17: 8, 58: 8}

Buffer = bytes | bytearray | memoryview | mmap.mmap


@dataclass
class FragCounters:
    """What happened to fragments and datagrams since start. Every field is a count."""

    fragments: int = 0  # fragments fed in
    datagrams: int = 0  # datagrams completed and handed on
    duplicates: int = 0  # fragments wholly inside data already held: dropped, queue kept
    overlaps: int = 0  # datagrams discarded for overlapping fragments
    invalid: int = 0  # datagrams discarded (length, empty fragment, ECN, size) or fragments dropped
    badsum: int = 0  # datagrams whose TCP/UDP checksum fails (fully captured ones): the host drops them too
    too_far: int = 0  # IPv4 queues restarted by ipfrag_max_dist
    timeouts: int = 0  # queues expired
    evicted: int = 0  # queues evicted by the entry, byte or run cap
    shed: int = 0  # fragments the capture loop did not feed in, its ring over half full (service.py)

    def detail(self) -> str:
        """``frag_NAME=value`` words for a lifecycle record's PS_DETAIL."""
        return " ".join(f"frag_{f.name}={getattr(self, f.name)}" for f in fields(self))


class _Queue:
    __slots__ = ("key", "v6", "src", "dst", "proto", "starts", "ends", "length", "last_in", "first_in", "meat",
                 "ecn", "head", "unfrag", "l4off", "csum", "whole", "expires", "rid", "cost")

    def __init__(self, key: bytes, v6: bool, src: bytes, dst: bytes, proto: int, expires: float) -> None:
        self.key, self.v6, self.src, self.dst, self.proto = key, v6, src, dst, proto
        self.expires = expires
        self.rid = 0
        self.cost = ENTRY_COST
        self.reset()

    def reset(self) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []
        self.length = 0
        self.last_in = self.first_in = False
        self.meat = 0
        self.ecn = 0
        self.head = _NO_HEAD  # IPv4: payload bytes [0, HEAD); IPv6: the transport header's first bytes
        self.unfrag = 0  # the first fragment's IPv4 header length, or IPv6 extension headers before the fragment header
        self.l4off = 0  # IPv6: extension headers at the start of the fragmentable part (not in the checksum)
        self.csum = 0  # the transport bytes' ones' complement sum so far (mod 0xFFFF)
        self.whole = True  # every byte of every fragment was captured: the checksum can be checked


_DUP, _OVERLAP, _OK = 0, 1, 2
_NO_HEAD = bytearray()  # shared and never written: a queue gets its own when data for it arrives


def _insert(q: _Queue, o: int, e: int) -> int:
    """Place [o, e) among the queue's runs, Linux's way (see the module text). Returns _OK, _DUP or _OVERLAP."""
    starts, ends = q.starts, q.ends
    if not starts:
        starts.append(o)
        ends.append(e)
        return _OK
    tail = ends[-1]
    if e > tail:  # beyond everything held: the common, in-order case
        if o < tail:
            return _OVERLAP
        if o == tail:
            ends[-1] = e
        else:
            starts.append(o)
            ends.append(e)
        return _OK
    i = bisect_right(starts, o) - 1
    if i >= 0 and ends[i] > o:  # run i holds the fragment's start
        return _DUP if e <= ends[i] else _OVERLAP
    if i + 1 < len(starts) and starts[i + 1] < e:
        return _OVERLAP
    starts.insert(i + 1, o)
    ends.insert(i + 1, e)
    return _OK


def _sum(buf: Buffer, a: int, b: int) -> int:
    """The ones' complement sum of ``buf[a:b]`` as 16-bit words from an even offset, modulo 0xFFFF (2**16 is 1
    modulo 0xFFFF, so the big integer's remainder is the word sum's): one C call for any length."""
    value = int.from_bytes(buf[a:b], "big")
    return (value << 8 if (b - a) & 1 else value) % 0xFFFF


def _ecn_bit(codepoint: int) -> int:
    return 1 << (codepoint & 3)  # not-ECT 1, ECT(1) 2, ECT(0) 4, CE 8


class Reassembler:
    """A bounded reassembly table for both families. :meth:`feed` takes one fragment (the bytes from the IP
    header on) and returns the synthetic packet of a datagram it completes, else None."""

    def __init__(self, *, timeout4: float = 30.0, timeout6: float = 60.0, max_entries: int = 8192,
                 max_bytes: int = 4 << 20, max_runs: int = 256, max_dist: int = 64) -> None:
        self.timeout4, self.timeout6 = timeout4, timeout6
        self.max_entries, self.max_bytes, self.max_runs, self.max_dist = max_entries, max_bytes, max_runs, max_dist
        self.counters = FragCounters()
        self.bytes = 0
        # One table per family, each in expiry order (same timeout within a family; a restart moves to the end).
        # OrderedDict: taking the oldest is O(1) (a plain dict skips every deleted slot at its front).
        self._tables: tuple[OrderedDict[bytes, _Queue], OrderedDict[bytes, _Queue]] = (OrderedDict(), OrderedDict())
        self._peers: dict[bytes, list[int]] = {}  # IPv4 source → [fragments seen, live queues]
        self._due = float("inf")  # no queue expires before this

    def __len__(self) -> int:
        return len(self._tables[0]) + len(self._tables[1])

    # ----------------------------------------------------------------- table upkeep
    def expire(self, now: float) -> None:
        if now < self._due:
            return
        due = float("inf")
        for table in self._tables:
            while table:
                q = next(iter(table.values()))
                if q.expires > now:
                    due = min(due, q.expires)
                    break
                self._drop(q)
                self.counters.timeouts += 1
        self._due = due

    def _drop(self, q: _Queue) -> None:
        del self._tables[q.v6][q.key]
        self.bytes -= q.cost
        if not q.v6:
            peer = self._peers[q.src]
            peer[1] -= 1
            if not peer[1]:
                del self._peers[q.src]

    def _evict_one(self) -> None:
        t4, t6 = self._tables
        if t4 and t6:  # the older queue goes: the one created first
            q4, q6 = next(iter(t4.values())), next(iter(t6.values()))
            q = q4 if q4.expires - self.timeout4 <= q6.expires - self.timeout6 else q6
        else:
            q = next(iter((t4 or t6).values()))
        self._drop(q)
        self.counters.evicted += 1

    def _queue(self, key: bytes, v6: bool, src: bytes, dst: bytes, proto: int, now: float) -> _Queue:
        table = self._tables[v6]
        q = table.get(key)
        if q is None:
            t4, t6 = self._tables
            while len(t4) + len(t6) >= self.max_entries or self.bytes + ENTRY_COST > self.max_bytes:
                if not (t4 or t6):
                    break
                self._evict_one()
            expires = now + (self.timeout6 if v6 else self.timeout4)
            if expires < self._due:
                self._due = expires
            q = _Queue(key, v6, src, dst, proto, expires)
            table[key] = q
            self.bytes += q.cost
            if not v6:
                peer = self._peers.get(src)
                if peer is None:
                    peer = self._peers[src] = [0, 0]
                peer[1] += 1
                q.rid = peer[0]
        return q

    def _discard(self, q: _Queue, overlap: bool = False) -> None:
        self._drop(q)
        if overlap:
            self.counters.overlaps += 1
        else:
            self.counters.invalid += 1

    # ----------------------------------------------------------------- input
    def feed(self, buf: Buffer, start: int, length: int | None, now: float) -> bytes | None:
        """One fragment from ``buf[start:start+length]``; never raises on any input."""
        end = len(buf) if length is None else min(len(buf), start + length)
        if end - start < 1 or start < 0:
            return None
        self.counters.fragments += 1
        self.expire(now)
        version = buf[start] >> 4
        if version == 4:
            return self._v4(buf, start, end, now)
        if version == 6:
            return self._v6(buf, start, end, now)
        self.counters.invalid += 1
        return None

    def _v4(self, buf: Buffer, start: int, end: int, now: float) -> bytes | None:
        if end - start < 20:
            self.counters.invalid += 1
            return None
        vi, tos, total, ident, frag, _, proto, src, dst = _V4.unpack_from(buf, start)
        ihl = (vi & 0x0F) * 4
        if ihl < 20 or total < ihl or end - start < ihl or _sum(buf, start, start + ihl):
            self.counters.invalid += 1  # (Linux drops a bad IPv4 header checksum before reassembly)
            return None
        o = (frag & 0x1FFF) * 8
        e = o + total - ihl
        mf = frag & 0x2000
        if not mf and not o:  # not a fragment at all
            self.counters.invalid += 1
            return None
        key = src + dst + ident.to_bytes(2, "big") + bytes((proto,))
        q = self._queue(key, False, src, dst, proto, now)
        if self.max_dist:
            peer = self._peers[src]
            peer[0] += 1
            if q.starts and peer[0] - q.rid > self.max_dist:  # the source moved on: start this queue afresh
                self.counters.too_far += 1
                self.bytes -= q.cost - ENTRY_COST
                q.cost = ENTRY_COST
                q.reset()
                self._tables[0].move_to_end(key)  # (its old expiry may stay in _due: expire() just looks early)
                q.expires = now + self.timeout4
            q.rid = peer[0]
        if not mf:
            if e < q.length or (q.last_in and e != q.length):
                self._discard(q)
                return None
            q.last_in, q.length = True, e
        else:
            e &= ~7
            if e > q.length:
                if q.last_in:
                    self._discard(q)
                    return None
                q.length = e
        if e == o:
            self._discard(q)
            return None
        if not self._place(q, o, e):
            return None
        q.ecn |= _ecn_bit(tos)
        data_start = start + ihl
        if data_start + e - o <= end:
            q.csum = (q.csum + _sum(buf, data_start, data_start + e - o)) % 0xFFFF
        else:
            q.whole = False
        if o < HEAD:  # payload bytes for the transport header
            n = max(0, min(e, HEAD, end - data_start + o) - o)
            if q.head is _NO_HEAD:
                q.head = bytearray(HEAD)
            q.head[o:o + n] = buf[data_start:data_start + n]
        if o == 0:
            q.first_in = True
            q.unfrag = ihl
        return self._complete(q, q.unfrag + q.length)

    def _v6(self, buf: Buffer, start: int, end: int, now: float) -> bytes | None:
        if end - start < 40:
            self.counters.invalid += 1
            return None
        vcf, plen, nh, src, dst = _V6.unpack_from(buf, start)
        # Walk the unfragmentable part to the fragment header.
        p = start + 40
        for _ in range(_MAX_EXT):
            if nh == _FRAGMENT or nh not in (_HOPOPTS, _ROUTING, _DSTOPTS, _AH) or p + 8 > end:
                break
            nh, p = buf[p], p + ((buf[p + 1] + 2) * 4 if nh == _AH else (buf[p + 1] + 1) * 8)
        if nh != _FRAGMENT or p + 8 > end or plen == 0:
            self.counters.invalid += 1
            return None
        inner, frag, ident = buf[p], (buf[p + 2] << 8) | buf[p + 3], bytes(buf[p + 4:p + 8])
        o, m = frag & 0xFFF8, frag & 1
        unfrag = p + 8 - (start + 40)
        e = o + plen - unfrag
        if e < o or (not m and not o):  # shorter than its headers, or an atomic fragment (not ours)
            self.counters.invalid += 1
            return None
        head: bytes | None = None
        proto = inner
        data = p + 8
        l4 = data
        if o == 0:  # RFC 8200 4.5: the first fragment holds every header through the transport header
            frag_end = data + e  # where the fragment's data ends (may be past what was captured)
            q_nh, t = inner, data
            walked = True
            for _ in range(_MAX_EXT):
                if q_nh not in (_HOPOPTS, _ROUTING, _DSTOPTS, _AH, _FRAGMENT):
                    break
                if t + 8 > min(end, frag_end):
                    walked = False  # Linux cannot walk it either: not "truncated", queued as it is
                    break
                q_nh, t = buf[t], t + (8 if q_nh == _FRAGMENT else
                                       (buf[t + 1] + 2) * 4 if q_nh == _AH else (buf[t + 1] + 1) * 8)
            if walked:
                if t + _V6_NEED.get(q_nh, 1) > frag_end:
                    self.counters.invalid += 1  # dropped with ICMPv6 parameter problem, code 3
                    return None
                proto, l4 = q_nh, t
                head = bytes(buf[t:min(t + HEAD, end)])
        key = src + dst + ident
        q = self._queue(key, True, src, dst, proto, now)
        if e > 65535:
            self.counters.invalid += 1
            return None
        if not m:
            if e < q.length or (q.last_in and e != q.length):
                self._discard(q)
                return None
            q.last_in, q.length = True, e
        else:
            if e & 7:
                self.counters.invalid += 1  # dropped with ICMPv6 parameter problem; the queue stays
                return None
            if e > q.length:
                if q.last_in:
                    self._discard(q)
                    return None
                q.length = e
        if e == o:
            self._discard(q)
            return None
        if not self._place(q, o, e):
            return None
        q.ecn |= _ecn_bit((vcf >> 20) & 3)
        if data + e - o <= end:
            q.csum = (q.csum + _sum(buf, l4, data + e - o)) % 0xFFFF
        else:
            q.whole = False
        if o == 0:
            q.first_in = True
            q.proto = proto
            q.unfrag = unfrag
            q.l4off = l4 - data
            q.head = bytearray(head) if head is not None else bytearray()
            if head is None:
                q.proto = -1  # transport header not found in the first fragment: nothing to judge
        return self._complete(q, q.unfrag + q.length)

    def _place(self, q: _Queue, o: int, e: int) -> bool:
        runs = len(q.starts)
        got = _insert(q, o, e)
        if got == _DUP:
            self.counters.duplicates += 1
            return False
        if got == _OVERLAP:
            self._discard(q, overlap=True)
            return False
        q.meat += e - o
        if len(q.starts) > runs:
            q.cost += RUN_COST
            self.bytes += RUN_COST
            if len(q.starts) > self.max_runs:
                self._drop(q)
                self.counters.evicted += 1
                return False
            while self.bytes > self.max_bytes and len(self) > 1:
                self._evict_one()
                if q.key not in self._tables[q.v6]:
                    return False
        return True

    def _complete(self, q: _Queue, size: int) -> bytes | None:
        if not (q.first_in and q.last_in and q.meat == q.length):
            return None
        if (q.ecn & 1 and q.ecn != 1) or size > 65535:
            self._discard(q)
            return None
        self._drop(q)
        if q.whole and q.proto in (6, 17) and not (q.proto == 17 and not q.v6 and q.head[6:8] == b"\0\0"):
            n = q.length - q.l4off  # TCP or UDP length, for the pseudo-header
            pseudo = (q.src + q.dst + (n.to_bytes(4, "big") + bytes((0, 0, 0, q.proto)) if q.v6
                                       else bytes((0, q.proto)) + n.to_bytes(2, "big")))
            if (int.from_bytes(pseudo, "big") + q.csum) % 0xFFFF:
                self.counters.badsum += 1  # Linux drops it without an answer
                return None
        self.counters.datagrams += 1
        if q.proto < 0:
            return None
        head = bytes(q.head[:min(q.length, HEAD)]) if not q.v6 else bytes(q.head)
        if q.v6:
            return _SYN6.pack(0x60000000, len(head), q.proto, 64, q.src, q.dst) + head
        return _SYN4.pack(0x45, 0, 20 + len(head), 0, 0, 64, q.proto, 0, q.src, q.dst) + head
