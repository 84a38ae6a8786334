"""The scanner's side of bench/fleet_e2e_bench.py, run inside the lab's scanner namespace (never elsewhere).

From one source address it pings each target (ICMP echo, raw socket bound to that address) every ``--interval``
seconds, sends the scan (TCP SYNs to ``--ports`` of the first target) at a known time, and keeps pinging until
every target is proven blocked, or ``--limit`` seconds passed. Blocked is decided from the probes, not the clock
(bench.responder_probe.BlockWatch: at least 5 probes sent after the last answered one, spanning ``--quiet``, none
answered), so a stall of the prober itself on a loaded machine is not taken for silence. It prints one JSON
object: the scan's send time and, per target, the send time of the first probe after which none was answered
(the ban in force at that target's firewall). Every loop is bounded in packets and seconds; times are
``time.time()`` so they compare with the records' PS_TIME.

    python -m bench.fleet_probe --src 198.18.7.100 --targets 198.18.7.21,198.18.7.25 --ports 1,11
"""

from __future__ import annotations

import argparse
import json
import os
import select
import socket
import struct
import time

from bench.responder_probe import BlockWatch


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def echo(ident: int, seq: int) -> bytes:
    head = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
    return struct.pack("!BBHHH", 8, 0, checksum(head + b"fleetbench"), ident, seq) + b"fleetbench"


def syn(src: str, dst: str, sport: int, dport: int) -> bytes:
    head = struct.pack("!HHIIBBHHH", sport, dport, 0x5EED0000 + dport, 0, 5 << 4, 0x02, 1024, 0, 0)
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, socket.IPPROTO_TCP, len(head))
    return head[:16] + struct.pack("!H", checksum(pseudo + head)) + head[18:]


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--src", required=True)
    p.add_argument("--targets", required=True, help="comma separated; the scan goes to the first")
    p.add_argument("--ports", default="1,11")
    p.add_argument("--interval", type=float, default=0.0005)
    p.add_argument("--lead", type=float, default=0.05, help="seconds of probes before the scan")
    p.add_argument("--at", type=float, default=0.0,
                   help="send the scan at this time (epoch seconds) instead of --lead after the start: two probers "
                        "given times a few ms apart make a burst of two scans")
    p.add_argument("--quiet", type=float, default=0.3)
    p.add_argument("--limit", type=float, default=5.0)
    args = p.parse_args()
    targets = args.targets.split(",")
    ident = os.getpid() & 0xFFFF
    icmp = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    icmp.bind((args.src, 0))
    icmp.setblocking(False)
    tcp = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
    tcp.bind((args.src, 0))
    watches = {t: BlockWatch(args.quiet) for t in targets}  # probe number = seq - 1, the same for every target
    seq = 0
    start = time.time()
    scan_at = 0.0
    scan_time = args.at if args.at > start else start + args.lead
    deadline = scan_time + args.limit
    while True:
        now = time.time()
        if not scan_at and now >= scan_time:
            scan_at = time.time()  # just before the first SYN leaves
            for i, port in enumerate(int(x) for x in args.ports.split(",")):
                tcp.sendto(syn(args.src, targets[0], 40000 + i, port), (targets[0], 0))
        seq += 1
        if seq > 0xFFFF:
            break  # 65,535 probes: bounded whatever happens
        for target in targets:
            icmp.sendto(echo(ident, seq), (target, 0))
            watches[target].probe(time.time())
        end = time.time() + args.interval
        while True:
            left = end - time.time()
            if left <= 0 or not select.select([icmp], [], [], left)[0]:
                break
            try:
                packet, (addr, _) = icmp.recvfrom(2048)
            except BlockingIOError:
                continue
            hl = (packet[0] & 0x0F) * 4
            kind, _, _, rid, rseq = struct.unpack("!BBHHH", packet[hl:hl + 8])
            if kind == 0 and rid == ident and addr in watches:
                watches[addr].answered(rseq - 1)
        if time.time() > deadline or (scan_at and all(w.blocked() is not None for w in watches.values())):
            break
    out: dict[str, object] = {"scan_at": scan_at, "probes": seq,
                              "max_send_gap": max(w.max_gap for w in watches.values())}
    for target in targets:
        out[target] = watches[target].blocked()
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
