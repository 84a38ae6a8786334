"""tcpdump's capture of a lab run, read back: IPv4 packets with their wire times, a TCP packet's addresses,
ports and flags, and per scanning source when its scan went out and when its ban took force (the responder
benchmarks' authoritative times)."""

from __future__ import annotations

import ipaddress
import struct
from pathlib import Path
from typing import Any

from .responder_lab import OPEN_PORT


def read_pcap(path: Path) -> list[tuple[float, bytes]]:
    """(timestamp, IPv4 packet) of an Ethernet pcap written by tcpdump (micro- or nanosecond)."""
    data = path.read_bytes()
    if len(data) < 24:
        return []
    magic = struct.unpack("<I", data[:4])[0]
    endian, scale = {0xA1B2C3D4: ("<", 1e-6), 0xA1B23C4D: ("<", 1e-9),
                     0xD4C3B2A1: (">", 1e-6), 0x4D3CB2A1: (">", 1e-9)}[magic]
    linktype = struct.unpack(endian + "I", data[20:24])[0]
    if linktype != 1:
        raise RuntimeError(f"pcap link type {linktype}, expected Ethernet")
    out, off = [], 24
    while off + 16 <= len(data):
        sec, frac, incl, _ = struct.unpack(endian + "IIII", data[off:off + 16])
        frame = data[off + 16:off + 16 + incl]
        off += 16 + incl
        if len(frame) > 34 and frame[12:14] == b"\x08\x00":
            out.append((sec + frac * scale, frame[14:]))
    return out


def tcp_view(pkt: bytes) -> tuple[str, str, int, int, int] | None:
    if pkt[9] != 6:
        return None
    ihl = (pkt[0] & 0x0F) * 4
    sport, dport = struct.unpack("!HH", pkt[ihl:ihl + 4])
    return (str(ipaddress.IPv4Address(pkt[12:16])), str(ipaddress.IPv4Address(pkt[16:20])), sport, dport,
            pkt[ihl + 13])


def analyse(pcap: Path, victim: str, sources: list[str]) -> dict[str, dict[str, float | None]]:
    """Per source, from the capture: the scan SYN's time, the first probe after which no probe was answered
    (ban in force, upper bound) and the last answered probe after the scan (lower bound)."""
    per: dict[str, dict[str, Any]] = {s: {"scan": None, "probes": [], "answered": set()} for s in sources}
    for ts, pkt in read_pcap(pcap):
        v = tcp_view(pkt)
        if v is None:
            continue
        src, dst, sport, dport, flags = v
        if src in per and dst == victim and flags & 0x12 == 0x02:
            if dport == 1 and per[src]["scan"] is None:
                per[src]["scan"] = ts
            elif dport == OPEN_PORT:
                per[src]["probes"].append((ts, sport))
        elif src == victim and dst in per and sport == OPEN_PORT and flags & 0x12 == 0x12:
            per[dst]["answered"].add(dport)
    out: dict[str, dict[str, float | None]] = {}
    for s, d in per.items():
        scan = d["scan"]
        if scan is None:
            out[s] = {"scan": None, "force": None, "lower": None, "pre_ok": 0}
            continue
        after = [(ts, sp) for ts, sp in d["probes"] if ts > scan]
        answered_after = [ts for ts, sp in after if sp in d["answered"]]
        last_ok = max(answered_after) if answered_after else None
        blocked = [ts for ts, _ in after if last_ok is None or ts > last_ok]
        pre_ok = sum(1 for ts, sp in d["probes"] if ts < scan and sp in d["answered"])
        out[s] = {"scan": scan, "force": blocked[0] if blocked else None, "lower": last_ok, "pre_ok": pre_ok}
    return out
