"""NFLOG over netlink: the kernel tells the responder, packet by packet, what a ``log group N`` rule matched.

Why not ``nft monitor``: elements that a rule adds from the packet path (``add @set { ip saddr }``) are not
announced to ``nft monitor`` (measured: kernel 6.18, nft 1.0.6, nothing printed), so the trap's adding rule
also logs the packet to an NFLOG group, and this socket receives it at once (queue threshold 1), in the
namespace the responder runs in. Needs CAP_NET_ADMIN. One socket per group; a group another program holds
(ulogd) fails to bind with EBUSY, reported as OSError.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
import time
from dataclasses import dataclass

NETLINK_NETFILTER = 12
NFNL_SUBSYS_ULOG = 4
NFULNL_MSG_PACKET = 0
NFULNL_MSG_CONFIG = 1
NLM_F_REQUEST = 1
NLM_F_ACK = 4
NLMSG_ERROR = 2
NLMSG_DONE = 3
NFULA_CFG_CMD = 1
NFULA_CFG_MODE = 2
NFULA_CFG_TIMEOUT = 4
NFULA_CFG_QTHRESH = 5
NFULNL_CFG_CMD_BIND = 1
NFULNL_CFG_CMD_UNBIND = 2
NFULNL_COPY_PACKET = 2
NFULA_PAYLOAD = 9
NFULA_PREFIX = 10
_NLH = struct.Struct("=IHHII")
_NFA = struct.Struct("=HH")
COPY_RANGE = 80  # an IPv6 header and the ports


@dataclass(frozen=True)
class LoggedPacket:
    prefix: str
    payload: bytes
    time: float


def _attr(kind: int, data: bytes) -> bytes:
    raw = _NFA.pack(_NFA.size + len(data), kind) + data
    return raw + b"\0" * (-len(raw) % 4)


def _config(group: int, seq: int, *attrs: bytes) -> bytes:
    body = struct.pack("=BBH", socket.AF_UNSPEC, 0, socket.htons(group)) + b"".join(attrs)
    kind = (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG
    return _NLH.pack(_NLH.size + len(body), kind, NLM_F_REQUEST | NLM_F_ACK, seq, 0) + body


def parse(data: bytes, when: float) -> tuple[list[LoggedPacket], list[int]]:
    """Logged packets and netlink error codes (acks are 0) in one datagram."""
    packets: list[LoggedPacket] = []
    errors: list[int] = []
    off = 0
    while off + _NLH.size <= len(data):
        length, kind, _flags, _seq, _pid = _NLH.unpack_from(data, off)
        if length < _NLH.size or off + length > len(data):
            break
        body = data[off + _NLH.size:off + length]
        off += (length + 3) & ~3
        if kind == NLMSG_ERROR and len(body) >= 4:
            errors.append(-struct.unpack_from("=i", body)[0])
            continue
        if kind != (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET or len(body) < 4:
            continue
        prefix, payload = "", b""
        pos = 4
        while pos + _NFA.size <= len(body):
            alen, atype = _NFA.unpack_from(body, pos)
            if alen < _NFA.size:
                break
            value = body[pos + _NFA.size:pos + alen]
            atype &= 0x7FFF
            if atype == NFULA_PREFIX:
                prefix = value.split(b"\0", 1)[0].decode("ascii", "replace")
            elif atype == NFULA_PAYLOAD:
                payload = value
            pos += (alen + 3) & ~3
        packets.append(LoggedPacket(prefix, payload, when))
    return packets, errors


class NflogSocket:
    """A non-blocking netlink socket bound to one NFLOG group; ``fileno()`` fits a selector."""

    def __init__(self, group: int) -> None:
        if not 0 < group < 65536:
            raise ValueError(f"bad NFLOG group {group}")
        self.group = group
        self.lost = 0  # the socket's buffer overflowed (ENOBUFS): some notifications are gone
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        try:
            try:
                self.sock.setsockopt(socket.SOL_SOCKET, 33, 4 << 20)  # SO_RCVBUFFORCE (root)
            except OSError:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            self.sock.bind((0, 0))
            self._request(_attr(NFULA_CFG_CMD, bytes([NFULNL_CFG_CMD_BIND])), seq=1)
            self._request(_attr(NFULA_CFG_MODE, struct.pack(">IBB", COPY_RANGE, NFULNL_COPY_PACKET, 0)),
                          _attr(NFULA_CFG_QTHRESH, struct.pack(">I", 1)),
                          _attr(NFULA_CFG_TIMEOUT, struct.pack(">I", 0)), seq=2)
        except OSError:
            self.sock.close()
            raise
        self.sock.setblocking(False)

    def _request(self, *attrs: bytes, seq: int) -> None:
        self.sock.settimeout(2.0)
        self.sock.send(_config(self.group, seq, *attrs))
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            _, errs = parse(self.sock.recv(65536), time.time())
            for code in errs:
                if code:
                    raise OSError(code, f"NFLOG group {self.group}: {os.strerror(code)}")
                return
        raise OSError(errno.ETIMEDOUT, f"NFLOG group {self.group}: no answer from the kernel")

    def fileno(self) -> int:
        return self.sock.fileno()

    def read(self, limit: int = 4096) -> list[LoggedPacket]:
        """What the kernel has sent so far (at most about ``limit`` packets), without blocking."""
        out: list[LoggedPacket] = []
        while len(out) < limit:
            try:
                data = self.sock.recv(1 << 16)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    self.lost += 1
                    continue
                raise
            packets, _ = parse(data, time.time())
            out.extend(packets)
        return out

    def close(self) -> None:
        try:
            self.sock.setblocking(True)
            self._request(_attr(NFULA_CFG_CMD, bytes([NFULNL_CFG_CMD_UNBIND])), seq=3)
        except OSError:
            pass
        self.sock.close()
