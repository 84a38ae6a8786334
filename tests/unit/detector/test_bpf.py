"""detector.bpf: the compiled kernel filter accepts probes to watched ports and nothing else.

The programs are run by a small classic-BPF interpreter (below) on raw IP bytes built with scapy, as the
kernel runs them on a cooked (SOCK_DGRAM) AF_PACKET socket, where the data starts at the IP header.
"""

from __future__ import annotations

import ctypes
import socket
import struct
from typing import Any

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrFragment, IPv6ExtHdrHopByHop
from scapy.packet import Packet

from portsentinel.detector.bpf import FilterError, Insn, build, compile_expression, filter_expression, port_ranges

# ----------------------------------------------------------------------------- a classic BPF interpreter

_M32 = 0xFFFFFFFF


def run_bpf(prog: list[Insn], pkt: bytes) -> int:
    """Execute ``prog`` over ``pkt`` like the kernel's classic BPF; returns the accepted length (0: drop)."""
    a = x = 0
    mem = [0] * 16
    pc = 0
    steps = 0
    while True:
        steps += 1
        assert steps <= 4096 and 0 <= pc < len(prog), "runaway program"
        code, jt, jf, k = prog[pc]
        pc += 1
        cls = code & 0x07
        if cls in (0x00, 0x01):  # LD, LDX
            size = {0x00: 4, 0x08: 2, 0x10: 1}[code & 0x18]
            mode = code & 0xE0
            if mode == 0x00:  # IMM
                val = k
            elif mode in (0x20, 0x40):  # ABS, IND
                off = k + (x if mode == 0x40 else 0)
                if off + size > len(pkt):
                    return 0  # out of bounds: the kernel drops the packet
                val = int.from_bytes(pkt[off:off + size], "big")
            elif mode == 0x60:  # MEM
                val = mem[k]
            elif mode == 0x80:  # LEN
                val = len(pkt)
            elif mode == 0xA0 and cls == 0x01:  # MSH: x = 4 * (pkt[k] & 0xf)
                if k >= len(pkt):
                    return 0
                val = (pkt[k] & 0x0F) * 4
            else:
                raise AssertionError(f"unknown load {code:#x}")
            if cls == 0x00:
                a = val
            else:
                x = val
        elif cls == 0x02:  # ST
            mem[k] = a
        elif cls == 0x03:  # STX
            mem[k] = x
        elif cls == 0x04:  # ALU
            src = x if code & 0x08 else k
            op = code & 0xF0
            if op == 0x00:
                a = (a + src) & _M32
            elif op == 0x10:
                a = (a - src) & _M32
            elif op == 0x20:
                a = (a * src) & _M32
            elif op == 0x30:
                if src == 0:
                    return 0
                a //= src
            elif op == 0x40:
                a |= src
            elif op == 0x50:
                a &= src
            elif op == 0x60:
                a = (a << src) & _M32
            elif op == 0x70:
                a >>= src
            elif op == 0x80:
                a = (-a) & _M32
            elif op == 0x90:
                if src == 0:
                    return 0
                a %= src
            elif op == 0xA0:
                a ^= src
            else:
                raise AssertionError(f"unknown alu {code:#x}")
        elif cls == 0x05:  # JMP
            op = code & 0xF0
            if op == 0x00:
                pc += k
                continue
            src = x if code & 0x08 else k
            cond = {0x10: a == src, 0x20: a > src, 0x30: a >= src, 0x40: bool(a & src)}[op]
            pc += jt if cond else jf
        elif cls == 0x06:  # RET
            return a if code & 0x18 == 0x10 else k
        elif cls == 0x07:  # MISC
            if code == 0x07:
                x = a
            elif code == 0x87:
                a = x
            else:
                raise AssertionError(f"unknown misc {code:#x}")


def accepts(prog: list[Insn], pkt: Packet | bytes) -> bool:
    return run_bpf(prog, bytes(pkt)) > 0


S4, D4, S6, D6 = "198.51.100.7", "203.0.113.1", "2001:db8::7", "2001:db8::1"


def v4(l4: Packet | bytes, **kw: Any) -> Packet:
    return IP(src=S4, dst=D4, **kw) / l4


def v6(*layers: Packet) -> Packet:
    pkt: Packet = IPv6(src=S6, dst=D6)
    for layer in layers:
        pkt = pkt / layer
    return pkt


def test_interpreter_sanity() -> None:
    assert run_bpf([(0x06, 0, 0, 0)], b"abc") == 0
    assert run_bpf([(0x06, 0, 0, 99)], b"abc") == 99
    prog = [(0x80, 0, 0, 0), (0x16, 0, 0, 0)]  # ld len; ret a
    assert run_bpf(prog, b"abcd") == 4


# ----------------------------------------------------------------------------- expressions

def test_port_ranges() -> None:
    assert port_ranges([]) == []
    assert port_ranges([5, 1, 2, 3, 3, 9, 10, 7]) == [(1, 3), (5, 5), (7, 7), (9, 10)]
    assert port_ranges(range(1, 65536)) == [(1, 65535)]


def test_filter_expression() -> None:
    assert filter_expression([], []) == ""
    expr = filter_expression([1, 2, 3, 143], [69])
    assert expr == ("(tcp and (dst portrange 1-3 or dst port 143)) or (udp and (dst port 69)) or "
                    "(ip6 and ip6[6] != 6 and ip6[6] != 17 and ip6[6] != 58) or (ip and ip[6:2] & 0x3fff != 0)")


def test_empty_watch_list_accepts_nothing() -> None:
    prog = build([], [])
    assert prog == [(0x06, 0, 0, 0)]
    assert not accepts(prog, v4(TCP(dport=1, flags="S")))


def test_bad_expression() -> None:
    with pytest.raises(FilterError, match="cannot compile"):
        compile_expression("tcp and and")


def test_too_long_program(monkeypatch: pytest.MonkeyPatch) -> None:
    """Over 4096 instructions is refused. (A real one takes libpcap's optimiser minutes: ~1,500 scattered
    ports already take ~50 s, so the compiler is stubbed here.)"""
    import scapy.arch.common

    class Fake:
        bf_len = 5000
        bf_insns = [type("I", (), {"code": 6, "jt": 0, "jf": 0, "k": 0})()] * 5000

    monkeypatch.setattr(scapy.arch.common, "compile_filter", lambda expr, linktype: Fake())
    with pytest.raises(FilterError, match="too long"):
        build(range(1, 8000, 2), [])


# ----------------------------------------------------------------------------- what the programs accept

STEALTH = build([1, 11, 15, 79, 111, 143, 31337], [7, 9, 69, 161])
ADVANCED = build(sorted(set(range(1, 1025)) - {113, 139}), sorted(set(range(1, 1025)) - {67, 137, 138, 520}))


@pytest.mark.parametrize("pkt", [
    v4(TCP(sport=40000, dport=143, flags="S")),
    v4(TCP(dport=1, flags="F")),
    v4(TCP(dport=31337, flags="")),
    v4(TCP(dport=79, flags="FPU")),
    v4(TCP(dport=11, flags="A")),
    v4(TCP(dport=15, flags="SA")),  # not a probe, but the filter is about ports: user space classifies
    v4(UDP(dport=69)),
    v4(UDP(dport=7) / (b"x" * 100)),
    v4(TCP(dport=143, flags="S"), flags="MF"),  # first fragment
    v6(TCP(dport=143, flags="S")),
    v6(UDP(dport=161)),
    v6(IPv6ExtHdrHopByHop(), TCP(dport=143)),  # extension headers go to user space to be walked
    v6(IPv6ExtHdrDestOpt(), UDP(dport=9999)),
    v6(IPv6ExtHdrHopByHop(), IPv6ExtHdrFragment(offset=0, m=1), TCP(dport=22)),
], ids=lambda p: p.summary())
def test_stealth_accepts(pkt: Packet) -> None:
    assert accepts(STEALTH, pkt)


@pytest.mark.parametrize("pkt", [
    v4(TCP(dport=144, flags="S")),
    v4(TCP(sport=143, dport=40000, flags="SA")),  # source port is not a destination port
    v4(UDP(dport=143)),  # TCP list port over UDP
    v4(TCP(dport=69)),  # UDP list port over TCP
    v4(UDP(sport=69, dport=5353)),
    v4(ICMP()),
    v6(TCP(dport=144)),
    v6(UDP(dport=1)),
    v6(ICMPv6EchoRequest()),
], ids=lambda p: p.summary())
def test_stealth_rejects(pkt: Packet) -> None:
    assert not accepts(STEALTH, pkt)


@pytest.mark.parametrize("pkt", [
    v6(IPv6ExtHdrFragment(offset=0, m=0), TCP(dport=143, flags="S")),
    v6(IPv6ExtHdrFragment(offset=0, m=1), TCP(dport=143, flags="S")),
    v6(IPv6ExtHdrFragment(offset=0, m=1), UDP(dport=69)),
], ids=lambda p: p.summary())
def test_stealth_accepts_ipv6_first_fragments(pkt: Packet) -> None:
    assert accepts(STEALTH, pkt)


@pytest.mark.parametrize("pkt", [
    v4(b"\x00" * 20, frag=10, proto=6),  # later fragment: no ports, the reassembler needs it
    v4(b"\x00" * 8, frag=1, proto=17, flags="MF"),
    v4(TCP(dport=144, flags="S"), flags="MF"),  # first fragment to an unwatched port: the host may drop it
    v4(bytes(TCP(dport=144, flags="S"))[:8], proto=6, flags="MF"),  # nmap -f: 8 bytes of TCP
], ids=lambda p: p.summary())
def test_every_ipv4_fragment_goes_to_user_space(pkt: Packet) -> None:
    assert accepts(STEALTH, pkt) and accepts(ADVANCED, pkt)


@pytest.mark.parametrize("port,tcp_ok,udp_ok", [
    (1, True, True), (112, True, True), (113, False, True), (139, False, True), (137, True, False),
    (520, True, False), (1024, True, True), (1025, False, False), (0, False, False), (65535, False, False),
])
def test_advanced_ranges(port: int, tcp_ok: bool, udp_ok: bool) -> None:
    for mk in (v4, v6):
        assert accepts(ADVANCED, mk(TCP(dport=port, flags="S"))) == tcp_ok, (mk.__name__, port)
        assert accepts(ADVANCED, mk(UDP(dport=port))) == udp_ok, (mk.__name__, port)


def test_ipv4_options_shift_the_ports() -> None:
    from scapy.layers.inet import IPOption_NOP

    assert accepts(STEALTH, IP(src=S4, dst=D4, options=[IPOption_NOP()] * 8) / TCP(dport=143))
    assert not accepts(STEALTH, IP(src=S4, dst=D4, options=[IPOption_NOP()] * 8) / TCP(dport=144))


def test_truncated_packets_do_not_crash_the_program() -> None:
    full = bytes(v4(TCP(dport=143)))
    for n in range(len(full)):
        run_bpf(STEALTH, full[:n])
    assert not accepts(STEALTH, full[:21])


# ----------------------------------------------------------------------------- the kernel's own verdict

class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]


@pytest.mark.parametrize("prog", [STEALTH, ADVANCED, build([], [])], ids=["stealth", "advanced", "empty"])
def test_kernel_accepts_the_programs(prog: list[Insn]) -> None:
    """SO_ATTACH_FILTER runs the kernel's checker; an unprivileged UDP socket is enough for that."""
    arr = (_SockFilter * len(prog))(*[_SockFilter(*insn) for insn in prog])
    fprog = struct.pack("HL", len(prog), ctypes.addressof(arr))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, 26, fprog)  # SO_ATTACH_FILTER
