"""AF_PACKET capture with a kernel BPF filter and a PACKET_MMAP (TPACKET_V2) receive ring.

Packets are read straight out of the shared ring: no system call per packet while the ring holds packets,
and only the headers are copied into it (a short frame). Outgoing packets are ignored in the kernel
(PACKET_IGNORE_OUTGOING). The sentry never answers anything: this socket only listens.
"""

from __future__ import annotations

import ctypes
import mmap
import socket
import struct
from collections.abc import Callable

from ..bpf import Insn

SOL_PACKET = 263
PACKET_RX_RING = 5
PACKET_STATISTICS = 6
PACKET_VERSION = 10
PACKET_IGNORE_OUTGOING = 23
TPACKET_V2 = 1
SO_ATTACH_FILTER = 26
ETH_P_ALL = 0x0003
TP_STATUS_USER = 1

_HDR = struct.Struct("<IIIHH")  # tp_status, tp_len, tp_snaplen, tp_mac, tp_net
_SLL_IFINDEX = struct.Struct("<i")
_SLL_OFFSET = 32  # TPACKET_ALIGN(sizeof(struct tpacket2_hdr))
#: One frame's header for a batch consumer (Pipeline.on_ring): tp_snaplen, tp_net and the sockaddr_ll's
#: interface index (at _SLL_OFFSET + 4), in one call.
FRAME = struct.Struct("<8xIxxH20xi")


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8),
                ("k", ctypes.c_uint32)]


class CaptureError(OSError):
    pass


def _attach(sock: socket.socket, program: list[Insn]) -> None:
    arr = (_SockFilter * len(program))(*[_SockFilter(*insn) for insn in program])
    fprog = struct.pack("HL", len(program), ctypes.addressof(arr))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


class RingCapture:
    """One capture socket over one interface (or all: ``iface="any"``)."""

    def __init__(self, iface: str, program: list[Insn], *, frame_size: int = 512,
                 ring_bytes: int = 8 << 20) -> None:
        self.iface = iface
        self.frame_size = frame_size
        block = 1 << 16
        nblocks = max(ring_bytes // block, 1)
        self.nframes = nblocks * (block // frame_size)
        try:
            # Packets queued before the filter is attached stay in the plain receive queue, which is never
            # read: only the ring (set up after the filter) is.
            self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_ALL))
        except PermissionError as exc:
            raise CaptureError(exc.errno, "AF_PACKET needs CAP_NET_RAW") from exc
        try:
            _attach(self.sock, program)
            try:
                self.sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
            except OSError:  # kernel < 4.20: outgoing copies are dropped by the caller's own-address check
                pass
            self.sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V2)
            req = struct.pack("IIII", block, nblocks, frame_size, self.nframes)
            self.sock.setsockopt(SOL_PACKET, PACKET_RX_RING, req)
            self.ring = mmap.mmap(self.sock.fileno(), block * nblocks, mmap.MAP_SHARED,
                                  mmap.PROT_READ | mmap.PROT_WRITE)
            self.status = memoryview(self.ring).cast("I")
            if iface != "any":
                self.sock.bind((iface, ETH_P_ALL))
        except OSError as exc:
            self.sock.close()
            raise CaptureError(exc.errno, f"capture on {iface}: {exc.strerror or exc}") from exc
        self.sock.setblocking(False)
        self.index = 0

    def fileno(self) -> int:
        return self.sock.fileno()

    def set_filter(self, program: list[Insn]) -> None:
        _attach(self.sock, program)

    def drain(self, handle: Callable[[mmap.mmap, int, int, int], None], budget: int = 4096) -> int:
        """Hand every packet in the ring to ``handle(buf, start, length, ifindex_offset)``; returns the count.

        ``ifindex_offset`` is where the sockaddr_ll's interface index sits in ``buf`` (read it with
        :func:`ifindex_at` only when needed).
        """
        ring, status, fs, nframes = self.ring, self.status, self.frame_size, self.nframes
        i = self.index
        n = 0
        unpack = _HDR.unpack_from
        while n < budget:
            off = i * fs
            if not status[off >> 2] & TP_STATUS_USER:
                break
            _, _, snaplen, _, net = unpack(ring, off)
            handle(ring, off + net, snaplen, off + _SLL_OFFSET + 4)
            status[off >> 2] = 0  # give the frame back to the kernel
            i += 1
            if i == nframes:
                i = 0
            n += 1
        self.index = i
        return n

    def stats(self) -> tuple[int, int]:
        """(packets, drops) since the last call (PACKET_STATISTICS resets on read)."""
        raw = self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)
        packets, drops = struct.unpack("II", raw)
        return packets, drops

    def close(self) -> None:
        try:
            self.status.release()
            self.ring.close()
        except (BufferError, ValueError):
            pass
        self.sock.close()


def ifindex_at(buf: mmap.mmap, offset: int) -> int:
    return int(_SLL_IFINDEX.unpack_from(buf, offset)[0])
