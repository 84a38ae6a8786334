"""Set elements added over netlink, without nft's parser: many addresses with their timeouts into a plain hash set
(``flags timeout``: the nftables action's <name>_v4 / <name>_v6) in one nf_tables transaction.

libnftables spends ~60 % of an ``add element`` of 100,000 addresses parsing its text (user 1.7 s and kernel
1.2 s for 1,000,000 on this VM, docs/performance.md). Here the elements are laid out at C speed (one template
repeated, each byte column of the keys and timeouts put in place by one slice assignment) and sent as
NFT_MSG_NEWSETELEM messages between NFNL_MSG_BATCH_BEGIN and _END: one transaction, all or nothing.

Only for a set the kernel describes (NFT_MSG_GETSET, asked at each commit) as a plain timeout set whose key is an
IPv4 or IPv6 address: no interval, map, concatenation or constant set (an interval set needs its ends; those keep
nft's text). Anything unexpected (a set of another kind, a text that is not an address, any error from the
kernel) returns False having changed nothing, and the caller runs the same elements as nft text
(responder.adapters.nftbatch), which reports what was wrong.
"""

from __future__ import annotations

import array
import socket
import struct
from collections.abc import Sequence

from portsentinel.responder.adapters import nftrules as NL

NFT_MSG_GETSET, NFT_MSG_NEWSET, NFT_MSG_NEWSETELEM = 10, 9, 12
NFNL_MSG_BATCH_BEGIN, NFNL_MSG_BATCH_END = 0x10, 0x11
NLM_F_CREATE = 0x400
NLA_F_NESTED = 0x8000
NFTA_SET_TABLE, NFTA_SET_NAME, NFTA_SET_FLAGS, NFTA_SET_KEY_LEN = 1, 2, 3, 5
NFTA_SET_ELEM_LIST_TABLE, NFTA_SET_ELEM_LIST_SET, NFTA_SET_ELEM_LIST_ELEMENTS = 1, 2, 3
NFTA_LIST_ELEM, NFTA_SET_ELEM_KEY, NFTA_SET_ELEM_TIMEOUT, NFTA_DATA_VALUE = 1, 1, 4, 1
#: Set flags (enum nft_set_flags): a set with any of these is not a plain one; it must have NFT_SET_TIMEOUT.
NFT_SET_ANONYMOUS, NFT_SET_CONSTANT, NFT_SET_INTERVAL, NFT_SET_MAP = 0x1, 0x2, 0x4, 0x8
NFT_SET_TIMEOUT, NFT_SET_OBJECT, NFT_SET_CONCAT = 0x10, 0x40, 0x80
_NOT_PLAIN = NFT_SET_ANONYMOUS | NFT_SET_CONSTANT | NFT_SET_INTERVAL | NFT_SET_MAP | NFT_SET_OBJECT | NFT_SET_CONCAT
SOL_NETLINK, NETLINK_CAP_ACK = 270, 10
SO_SNDBUFFORCE = 32

_NLMSG = struct.Struct("=IHHII")
_NLA = struct.Struct("=HH")
#: The address family of each key length.
_AF = {4: socket.AF_INET, 16: socket.AF_INET6}


def _nla(kind: int, data: bytes) -> bytes:
    return _NLA.pack(_NLA.size + len(data), kind) + data + b"\0" * (-len(data) % 4)


def _name(kind: int, text: str) -> bytes:
    return _nla(kind, text.encode() + b"\0")


def template(key_len: int) -> bytes:
    """One element's attributes with a zero key and timeout: NFTA_LIST_ELEM { NFTA_SET_ELEM_KEY { NFTA_DATA_VALUE
    key }, NFTA_SET_ELEM_TIMEOUT u64 (big-endian milliseconds) }."""
    key = _nla(NFTA_SET_ELEM_KEY | NLA_F_NESTED, _nla(NFTA_DATA_VALUE, b"\0" * key_len))
    return _nla(NFTA_LIST_ELEM | NLA_F_NESTED, key + _nla(NFTA_SET_ELEM_TIMEOUT, b"\0" * 8))


def elements(key_len: int, keys: bytes, timeouts_ms: Sequence[int]) -> bytes:
    """The attributes of ``len(timeouts_ms)`` elements: ``keys`` holds their keys one after the other (network
    order, ``key_len`` bytes each). Each byte column put in place by one slice assignment (no call per element)."""
    n = len(timeouts_ms)
    if len(keys) != n * key_len:
        raise ValueError("one key per timeout")
    one = template(key_len)
    size = len(one)
    buf = bytearray(one * n)
    key_at = 3 * _NLA.size  # LIST_ELEM, ELEM_KEY, DATA_VALUE headers
    for k in range(key_len):
        buf[key_at + k::size] = keys[k::key_len]
    ms = array.array("Q", timeouts_ms)
    if ms.itemsize != 8:
        raise ValueError("no 64-bit array type")
    if struct.pack("=H", 1) == b"\x01\x00":
        ms.byteswap()  # to big-endian
    raw = ms.tobytes()
    time_at = size - 8
    for k in range(8):
        buf[time_at + k::size] = raw[k::8]
    return bytes(buf)


def per_message(key_len: int) -> int:
    """Elements in one NFT_MSG_NEWSETELEM: its element list is one attribute, whose length is 16 bits."""
    return (0xFFFF - _NLA.size) // len(template(key_len))


def keys_of(ips: Sequence[str], key_len: int) -> bytes:
    """The addresses' keys in network order; ValueError for a text that is not an address of that length."""
    try:
        return b"".join(map(socket.inet_pton, [_AF[key_len]] * len(ips), ips))
    except (OSError, KeyError, TypeError) as exc:
        raise ValueError(f"not an address of {key_len} bytes: {exc}") from None


class Elements:
    """A netlink socket of its own (one per thread's runner) adding elements to plain timeout sets."""

    def __init__(self, timeout: float = 60.0) -> None:
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._seq = 0
        #: Transactions committed this way (the tests and the benchmarks read it).
        self.commits = 0

    def _socket(self) -> socket.socket:
        if self._sock is None:
            s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NL.NETLINK_NETFILTER)
            s.bind((0, 0))
            s.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)  # an error echoes the header only, not 64 KB of elements
            self._sock = s
        return self._sock

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _next(self) -> int:
        self._seq = (self._seq + 1) & 0x7FFFFFFF
        return self._seq

    def _talk(self, msgs: list[bytes], seqs: set[int]) -> bool:
        """Send ``msgs`` in one buffer; True when the kernel acknowledged every sequence in ``seqs``."""
        s = self._socket()
        data = b"".join(msgs)
        if len(data) + 4096 > s.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF):
            try:
                s.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, len(data) + 65536)
            except OSError:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, len(data) + 65536)
        s.settimeout(self.timeout)
        s.sendall(data)
        waiting = set(seqs)
        while waiting:
            buf = s.recv(1 << 16)
            for off_type, payload, seq in _replies(buf):
                if off_type == NL.NLMSG_ERROR:
                    if NL.error_of(payload):  # the whole transaction is aborted (an error on any message of it)
                        self.close()  # (the rest of its answers, if any, go with the socket)
                        return False
                    waiting.discard(seq)
        return True

    def set_key_len(self, family: str, table: str, name: str) -> int | None:
        """The key length (4 or 16) of the set when it is a plain timeout set, else None (an interval, map or
        concatenated set, one without timeouts, none of that name, any error)."""
        seq = self._next()
        body = (struct.pack("=BBH", NL.FAMILIES[family], 0, 0) + _name(NFTA_SET_TABLE, table)
                + _name(NFTA_SET_NAME, name))
        req = _NLMSG.pack(_NLMSG.size + len(body), NL.NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_GETSET,
                          NL.NLM_F_REQUEST | NL.NLM_F_ACK, seq, 0) + body
        try:
            s = self._socket()
            s.settimeout(self.timeout)
            s.send(req)
            found: dict[int, bytes] = {}
            done = False
            while not done:
                for mtype, payload, rseq in _replies(s.recv(1 << 16)):
                    if rseq != seq:
                        continue
                    if mtype == NL.NLMSG_ERROR:
                        if NL.error_of(payload):
                            return None
                        done = True
                    elif mtype == NL.NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_NEWSET:
                        found = dict(NL.attributes(payload[4:]))
        except OSError:
            self.close()
            return None
        if NFTA_SET_FLAGS not in found or NFTA_SET_KEY_LEN not in found:
            return None
        flags = struct.unpack("!I", found[NFTA_SET_FLAGS][:4])[0]
        key_len = struct.unpack("!I", found[NFTA_SET_KEY_LEN][:4])[0]
        if flags & _NOT_PLAIN or not flags & NFT_SET_TIMEOUT or key_len not in _AF:
            return None
        return int(key_len)

    def add(self, family: str, table: str, groups: Sequence[tuple[str, Sequence[str], Sequence[int | None]]]) -> bool:
        """Every group's elements (set name, addresses, timeouts in seconds: each at least 1, none without) added
        in one transaction; False with nothing changed when any set is not a plain timeout set of its keys' length,
        any text is not an address, a timeout is missing, or the kernel refused the transaction."""
        if family not in NL.FAMILIES:
            return False
        bodies: list[tuple[str, int, bytes]] = []  # set, key length, elements
        for name, ips, timeouts in groups:
            if not ips:
                continue
            if any(t is None or t < 0 for t in timeouts):
                return False  # (an element without a timeout: nft's text)
            key_len = self.set_key_len(family, table, name)
            if key_len is None:
                return False
            try:
                keys = keys_of(ips, key_len)
                ms = [max(int(t), 1) * 1000 for t in timeouts]  # type: ignore[arg-type]  # (None refused above)
                body = elements(key_len, keys, ms)
            except (ValueError, OverflowError):
                return False
            bodies.append((name, key_len, body))
        if not bodies:
            return True
        head = struct.pack("=BBH", NL.FAMILIES[family], 0, 0)
        msgs, seqs = [_control(NFNL_MSG_BATCH_BEGIN, self._next())], set()
        for name, key_len, body in bodies:
            step = per_message(key_len) * len(template(key_len))
            names = _name(NFTA_SET_ELEM_LIST_TABLE, table) + _name(NFTA_SET_ELEM_LIST_SET, name)
            for off in range(0, len(body), step):
                part = body[off:off + step]
                seq = self._next()
                seqs.add(seq)
                payload = head + names + _NLA.pack(_NLA.size + len(part), NFTA_SET_ELEM_LIST_ELEMENTS | NLA_F_NESTED) \
                    + part
                msgs.append(_NLMSG.pack(_NLMSG.size + len(payload), NL.NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_NEWSETELEM,
                                        NL.NLM_F_REQUEST | NLM_F_CREATE | NL.NLM_F_ACK, seq, 0) + payload)
        msgs.append(_control(NFNL_MSG_BATCH_END, self._next()))
        try:
            ok = self._talk(msgs, seqs)
        except OSError:
            self.close()  # (a reply may still be queued on it)
            return False
        if ok:
            self.commits += 1
        return ok


def _control(mtype: int, seq: int) -> bytes:
    """NFNL_MSG_BATCH_BEGIN / _END for nf_tables (res_id: the subsystem, big-endian)."""
    body = struct.pack("=BBH", socket.AF_UNSPEC, 0, socket.htons(NL.NFNL_SUBSYS_NFTABLES))
    return _NLMSG.pack(_NLMSG.size + len(body), mtype, NL.NLM_F_REQUEST, seq, 0) + body


def _replies(data: bytes) -> list[tuple[int, bytes, int]]:
    """(type, payload, sequence) of each message in a buffer the kernel sent (an error's or acknowledgement's
    sequence is that of the message it answers)."""
    out = []
    off = 0
    for mtype, payload in NL.messages(data):
        seq = _NLMSG.unpack_from(data, off)[3]
        length = _NLMSG.unpack_from(data, off)[0]
        if mtype == NL.NLMSG_ERROR and len(payload) >= 4 + _NLMSG.size:
            seq = _NLMSG.unpack_from(payload, 4)[3]
        out.append((mtype, payload, seq))
        off += (length + 3) & ~3
    return out
