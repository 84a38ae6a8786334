#!/usr/bin/env python3
"""Scan-to-ban probe, run by bench/responder_bench.py inside the lab's *attacker* namespace only.

For each source address given (an alias of the attacker's interface), in turn:

1. ``--pre`` probe SYNs to the victim's open port, one every ``--interval`` seconds (each from a new source
   port, so every SYN-ACK names the probe it answers);
2. one SYN to the victim's monitored closed port: the scan that the detector reports and the responder bans;
3. probes go on at the same pace until ``--quiet`` seconds' worth of them (at least 5) went unanswered (the ban is
   in force; ``silent``: judged by probes sent, not by the clock), or ``--window`` seconds after the scan at the
   latest.

The SYNs are hand-made IPv4/TCP packets on a raw socket; SYN-ACKs are read from a raw TCP socket. Every
packet goes to ``--victim`` only; the count of packets is bounded by ``--window``/``--interval`` per source and
the run by the ``timeout`` the caller puts around this program. Prints one JSON line per source with what it
saw; bench/responder_bench.py takes the authoritative times from its tcpdump capture.
"""

from __future__ import annotations

import argparse
import bisect
import json
import socket
import struct
import time

SYN, ACK = 0x02, 0x10


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def syn(src: str, dst: str, sport: int, dport: int, seq: int) -> bytes:
    s, d = socket.inet_aton(src), socket.inet_aton(dst)
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, 0, 5 << 4, SYN, 64240, 0, 0)
    csum = checksum(s + d + struct.pack("!BBH", 0, socket.IPPROTO_TCP, len(tcp)) + tcp)
    tcp = tcp[:16] + struct.pack("!H", csum) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), sport, 0, 64, socket.IPPROTO_TCP, 0, s, d)
    ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
    return ip + tcp


def silent(times: list[float], since: float, quiet: float, min_probes: int = 5) -> bool:
    """True when the probes sent after ``since`` (``times``: send times in order) are at least ``min_probes`` and
    span at least ``quiet`` seconds: none of them answered is then a block. Judged by probes sent, not by the clock,
    so a pause of the prober itself (a loaded machine) is no silence (``BlockWatch`` says why)."""
    k = bisect.bisect_right(times, since)
    return len(times) - k >= min_probes and times[-1] - times[k] >= quiet


class BlockWatch:
    """When probes from one source stopped being answered, decided from the probes alone (watch mode).

    Blocked means: at least ``min_probes`` probes sent after the last answered one, their send times spanning at
    least ``quiet`` seconds, none answered. Time passing proves nothing by itself: when the watcher is not
    scheduled (a loaded machine) it sends nothing, so a pause of its own between sending a probe and reading the
    answer must not count as silence. (Judging by the clock since the last answered probe did count it: the
    watcher stopped with the newest probe answered and no probe after it, i.e. "never blocked", or with a bogus
    early time, while the responder had not banned anything yet.) Probes are numbered in send order and an
    answer names its probe by number, so a late or repeated answer cannot be taken for another probe's.
    """

    def __init__(self, quiet: float, min_probes: int = 5) -> None:
        self.quiet = quiet
        self.min_probes = min_probes
        self.sent: list[float] = []  # send time (wall clock) by probe number
        self.last_ok = -1  # number of the newest probe answered
        self.max_gap = 0.0  # longest time between two sends: how long the watcher itself stalled

    def probe(self, at: float) -> int:
        """A probe sent at ``at``: its number."""
        if self.sent:
            self.max_gap = max(self.max_gap, at - self.sent[-1])
        self.sent.append(at)
        return len(self.sent) - 1

    def answered(self, number: int) -> None:
        if 0 <= number < len(self.sent):
            self.last_ok = max(self.last_ok, number)

    @property
    def ready(self) -> bool:
        return self.last_ok >= 0

    def blocked(self) -> float | None:
        """Send time of the first probe of the silence, once the silence is proven; else None."""
        first = self.last_ok + 1
        if not self.ready or len(self.sent) - first < self.min_probes:
            return None
        return self.sent[first] if self.sent[-1] - self.sent[first] >= self.quiet else None

    def result(self, src: str) -> dict[str, object]:
        return {"src": src, "probes": len(self.sent),
                "last_answered": self.sent[self.last_ok] if self.ready else 0.0, "first_blocked": self.blocked(),
                "max_send_gap": round(self.max_gap, 6)}


def watch(a: argparse.Namespace) -> int:
    """Probe from one (already banned-to-be) source until probes stop being answered (``BlockWatch``): the wall
    time of the first probe after which none was answered, and of the last answered one. Prints "ready" once
    answered. A probe's number is its TCP sequence number; the SYN-ACK acknowledges number + 1."""
    src = a.sources[0]
    tx = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    rx = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
    rx.setblocking(False)
    victim, me = socket.inet_aton(a.victim), socket.inet_aton(src)
    w = BlockWatch(a.quiet)
    end = time.monotonic() + a.watch
    while time.monotonic() < end and w.blocked() is None:
        i = w.probe(time.time())
        tx.sendto(syn(src, a.victim, 10000 + i % 50000, a.open_port, i), (a.victim, 0))
        time.sleep(a.interval)
        was_ready = w.ready
        for ack in acks(rx, victim, me, a.open_port):
            w.answered(ack - 1)
        if w.ready and not was_ready:
            print("ready", flush=True)
    print(json.dumps(w.result(src)), flush=True)
    return 0


def acks(rx: socket.socket, victim: bytes, me: bytes, open_port: int) -> list[int]:
    """Acknowledgement numbers of the SYN-ACKs from ``victim``'s open port to ``me`` queued on ``rx``."""
    out: list[int] = []
    while True:
        try:
            pkt = rx.recv(256)
        except BlockingIOError:
            return out
        ihl = (pkt[0] & 0x0F) * 4
        if pkt[12:16] != victim or pkt[16:20] != me or len(pkt) < ihl + 14:
            continue
        sp, ack = struct.unpack("!H6xI", pkt[ihl:ihl + 12])
        if sp == open_port and pkt[ihl + 13] & (SYN | ACK) == SYN | ACK:
            out.append(ack)


def rounds(a: argparse.Namespace) -> int:
    """Re-ban mode (``--rounds N``, N ≥ 2): per source, a first scan and ban as in the default mode; then, while
    banned, one more SYN to the scan port every ``--through`` seconds (nftables drops them, the detector's
    capture sees them) and the open-port probes go on until one is answered again (the ban ended); then, after
    ``--settle`` seconds, the rescan: a SYN to the scan port, measured like the first. N rounds in all.

    Scan SYNs of round k leave from source port 60000 + k, the through-ban ones from 61000 and up, the probes
    from 10000-59999: the bench's capture tells them apart. Bounded: ``--window`` seconds per block,
    ``--ban-wait`` seconds per ban. Prints one JSON line per source.
    """
    tx = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    rx = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    rx.setblocking(False)
    victim = socket.inet_aton(a.victim)
    for src in a.sources:
        me = socket.inet_aton(src)
        sent: dict[int, float] = {}
        last_ok = 0.0  # send time of the latest probe answered
        times: list[float] = []  # send times in order (monotonic)
        i = through = 0
        rnd, phase = 0, "pre"
        phase_at = blocked_at = next_through = time.monotonic()
        rows: list[dict[str, float]] = []
        out: dict[str, object] = {"src": src, "rounds": rows}
        nxt = time.monotonic()
        while True:
            now = time.monotonic()
            if now >= nxt:
                sport = 10000 + i % 50000
                sent.pop(sport, None)
                tx.sendto(syn(src, a.victim, sport, a.open_port, 1000 + i), (a.victim, 0))
                sent[sport] = time.monotonic()
                times.append(sent[sport])
                i += 1
                nxt += a.interval
            while True:
                try:
                    pkt = rx.recv(256)
                except BlockingIOError:
                    break
                ihl = (pkt[0] & 0x0F) * 4
                if pkt[12:16] != victim or pkt[16:20] != me or len(pkt) < ihl + 14:
                    continue
                sp, dp = struct.unpack("!HH", pkt[ihl:ihl + 4])
                if sp == a.open_port and pkt[ihl + 13] & (SYN | ACK) == SYN | ACK and dp in sent:
                    last_ok = max(last_ok, sent[dp])
            now = time.monotonic()
            if phase == "pre" and i >= a.pre or phase == "ended" and now - phase_at >= a.settle:
                rnd += 1
                tx.sendto(syn(src, a.victim, 60000 + rnd, a.scan_port, rnd), (a.victim, 0))
                phase, phase_at = "scan", time.monotonic()
            elif phase == "scan":
                if silent(times, max(last_ok, phase_at), a.quiet):
                    rows.append({"blocked_after": round(max(last_ok - phase_at, 0.0), 6)})
                    if rnd >= a.rounds:
                        break
                    phase, phase_at, blocked_at, next_through = "banned", now, now, now + a.through
                elif now - phase_at > a.window:
                    out["error"] = f"round {rnd}: not blocked within {a.window} s"
                    break
            elif phase == "banned":
                if last_ok > blocked_at:
                    phase, phase_at = "ended", now
                elif now - phase_at > a.ban_wait:
                    out["error"] = f"round {rnd}: still banned after {a.ban_wait} s"
                    break
                elif now >= next_through:
                    tx.sendto(syn(src, a.victim, 61000 + through % 4000, a.scan_port, through), (a.victim, 0))
                    through += 1
                    next_through += a.through
            time.sleep(max(0.0, min(nxt - time.monotonic(), 0.0002)))
        out["probes"] = i
        print(json.dumps(out), flush=True)
        time.sleep(a.gap)
    return 0


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--victim", required=True)
    p.add_argument("--open-port", type=int, default=8080)
    p.add_argument("--scan-port", type=int, default=1)
    p.add_argument("--interval", type=float, default=0.0005)
    p.add_argument("--pre", type=int, default=10)
    p.add_argument("--window", type=float, default=1.0)
    p.add_argument("--quiet", type=float, default=0.02)
    p.add_argument("--gap", type=float, default=0.05)
    p.add_argument("--watch", type=float, default=0.0,
                   help="watch mode: no scan; probe from the one source until it is blocked, at most this long")
    p.add_argument("--rounds", type=int, default=1,
                   help="re-ban mode: scan, ban, wait for its end (probing through it), rescan; this many rounds")
    p.add_argument("--through", type=float, default=0.25, help="re-ban mode: scan-port SYN interval while banned")
    p.add_argument("--ban-wait", type=float, default=10.0, help="re-ban mode: at most this long per ban")
    p.add_argument("--settle", type=float, default=0.0,
                   help="re-ban mode: wait this long after the ban ended before the rescan")
    p.add_argument("sources", nargs="+")
    a = p.parse_args()
    if a.window > 5 or a.interval < 0.0001 or a.watch > 120:
        raise SystemExit("bounds: --window at most 5 s, --watch at most 120 s, --interval at least 0.1 ms")
    if a.watch:
        return watch(a)
    if a.rounds > 1:
        if a.rounds > 10 or a.ban_wait > 60 or a.through < 0.01:
            raise SystemExit("bounds: --rounds at most 10, --ban-wait at most 60 s, --through at least 10 ms")
        return rounds(a)

    tx = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    rx = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    rx.setblocking(False)
    victim = socket.inet_aton(a.victim)

    for k, src in enumerate(a.sources):
        me = socket.inet_aton(src)
        base = 10000 + (k * 2500) % 40000
        sent: dict[int, float] = {}
        answered: set[int] = set()
        times: list[float] = []  # send times in order (monotonic)
        last_answered_probe = 0.0  # send time of the latest probe answered
        scan_at = 0.0
        i = 0
        nxt = time.monotonic()
        while True:
            now = time.monotonic()
            if now >= nxt:
                if i == a.pre and not scan_at:
                    tx.sendto(syn(src, a.victim, 60000, a.scan_port, 1), (a.victim, 0))
                    scan_at = time.monotonic()
                sport = base + i
                tx.sendto(syn(src, a.victim, sport, a.open_port, 1000 + i), (a.victim, 0))
                sent[sport] = time.monotonic()
                times.append(sent[sport])
                i += 1
                nxt += a.interval
            while True:
                try:
                    pkt = rx.recv(256)
                except BlockingIOError:
                    break
                ihl = (pkt[0] & 0x0F) * 4
                if pkt[12:16] != victim or pkt[16:20] != me or len(pkt) < ihl + 14:
                    continue
                sp, dp = struct.unpack("!HH", pkt[ihl:ihl + 4])
                if sp == a.open_port and pkt[ihl + 13] & (SYN | ACK) == SYN | ACK and dp in sent:
                    answered.add(dp)
                    last_answered_probe = max(last_answered_probe, sent[dp])
            now = time.monotonic()
            if scan_at:
                if now - scan_at > a.window:
                    break
                if silent(times, max(last_answered_probe, scan_at), a.quiet):
                    break
            time.sleep(max(0.0, min(nxt - time.monotonic(), 0.0002)))
        pre_ok = sum(1 for sp in answered if sp < base + a.pre)
        print(json.dumps({"src": src, "probes": i, "answered": len(answered), "pre_answered": pre_ok,
                          "gen_blocked_after": round(last_answered_probe - scan_at, 6)}), flush=True)
        time.sleep(a.gap)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
