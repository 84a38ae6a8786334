#!/usr/bin/env python3
"""Waits until some IPv4 addresses are all elements of an nftables set, asking the kernel over netlink for just
those elements (NFT_MSG_GETSETELEM without a dump: the kernel answers each one in order and stops with ENOENT at
the first that is not there), so a poll costs well under a millisecond whatever the set's size.
``nft get element`` in nft 1.0.6 fetches the whole set first (~50 ms of CPU a poll beside 100,000 elements), and a
dump of a hash set costs the kernel ~0.6 s at that size: a benchmark polling either way takes that CPU from the
process it measures (bench/fleet_e2e_bench.py). The caller names the addresses that go in last (a responder
applies its input in order, one nft transaction a batch) and checks the whole set once afterwards.

Run inside the namespace whose set it watches; ``--addrs -`` reads the comma-separated addresses as one line from
standard input (when the caller learns them only later). Prints one JSON line, {"at": epoch when all were
present, "polls": N} or {"at": null} after ``--limit`` seconds, then exits 0 or 1:
    python -m bench.set_watch --table portsentinel --set fleet_v4 --addrs 100.64.0.0,100.65.134.159
"""

from __future__ import annotations

import argparse
import errno
import ipaddress
import json
import os
import socket
import struct
import sys
import time

from portsentinel.responder.adapters.nftrules import (
    FAMILIES,
    NETLINK_NETFILTER,
    NFNL_SUBSYS_NFTABLES,
    NLM_F_ACK,
    NLM_F_REQUEST,
    NLMSG_ERROR,
    error_of,
    messages,
)

NFT_MSG_GETSETELEM = 13
NEWSETELEM = NFNL_SUBSYS_NFTABLES << 8 | 12
NFTA_SET_ELEM_LIST_TABLE, NFTA_SET_ELEM_LIST_SET, NFTA_SET_ELEM_LIST_ELEMENTS = 1, 2, 3
NFTA_LIST_ELEM, NFTA_SET_ELEM_KEY, NFTA_DATA_VALUE = 1, 1, 1
NLA_F_NESTED = 0x8000
#: Addresses a request of the walk asks for.
WALK = 1000
_NLMSG = struct.Struct("=IHHII")
_NLA = struct.Struct("=HH")


def _nla(kind: int, data: bytes) -> bytes:
    return _NLA.pack(_NLA.size + len(data), kind) + data + b"\0" * (-len(data) % 4)


def request(family: str, table: str, set_name: str, keys: list[bytes], seq: int) -> bytes:
    """NFT_MSG_GETSETELEM of the elements ``keys`` (each an IPv4 address in network order)."""
    elems = b"".join(_nla(NFTA_LIST_ELEM | NLA_F_NESTED,
                          _nla(NFTA_SET_ELEM_KEY | NLA_F_NESTED, _nla(NFTA_DATA_VALUE, k))) for k in keys)
    body = (struct.pack("=BBH", FAMILIES[family], 0, 0) + _nla(NFTA_SET_ELEM_LIST_TABLE, table.encode() + b"\0")
            + _nla(NFTA_SET_ELEM_LIST_SET, set_name.encode() + b"\0")
            + _nla(NFTA_SET_ELEM_LIST_ELEMENTS | NLA_F_NESTED, elems))
    return _NLMSG.pack(_NLMSG.size + len(body), NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_GETSETELEM,
                       NLM_F_REQUEST | NLM_F_ACK, seq, 0) + body


def confirmed(sock: socket.socket, req: bytes) -> int:
    """How many of the request's elements, from its first, are in the set (the kernel's answers before ENOENT;
    a missing set or table is ENOENT too)."""
    sock.send(req)
    found = 0
    while True:
        for mtype, payload in messages(sock.recv(1 << 20)):
            if mtype == NLMSG_ERROR:
                err = error_of(payload)
                if err in (0, errno.ENOENT):
                    return found
                raise OSError(err, f"netlink: {os.strerror(err)}")
            if mtype == NEWSETELEM:
                found += 1


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--family", default="inet", choices=sorted(FAMILIES))
    p.add_argument("--table", required=True)
    p.add_argument("--set", required=True, dest="set_name")
    p.add_argument("--addrs", required=True, help="comma-separated IPv4 addresses, or - (a line of standard input)")
    p.add_argument("--interval", type=float, default=0.01, help="seconds between polls (default 0.01)")
    p.add_argument("--limit", type=float, default=300.0, help="give up after this many seconds")
    p.add_argument("--then-range", nargs=2, metavar=("FIRST", "COUNT"),
                   help="once the addresses are in, walk COUNT addresses from FIRST (1,000 a request, each confirmed "
                        "once, a missing one asked for again every --interval) and report when all were in")
    args = p.parse_args()
    deadline = time.monotonic() + args.limit
    text = sys.stdin.readline() if args.addrs == "-" else args.addrs
    try:
        keys = [ipaddress.IPv4Address(a.strip()).packed for a in text.split(",") if a.strip()]
    except ValueError as exc:
        p.error(f"--addrs: {exc}")
    if not keys:
        p.error("--addrs: no address")
    polls = 0
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_NETFILTER) as sock:
        sock.settimeout(10)
        # the walk's answers (one message an element, up to WALK a request) must fit: 8 MiB (root may force it)
        sock.setsockopt(socket.SOL_SOCKET, getattr(socket, "SO_RCVBUFFORCE", 33), 8 << 20)
        sock.bind((0, 0))
        while time.monotonic() < deadline:
            polls += 1
            found = confirmed(sock, request(args.family, args.table, args.set_name, keys, polls))
            del keys[:found]
            if not keys:
                at = time.time()
                out: dict[str, float | int | None] = {"at": at, "polls": polls}
                if args.then_range:
                    out.update(walk(sock, args, deadline))
                print(json.dumps(out), flush=True)
                return 0 if out.get("all_at", at) is not None else 1
            time.sleep(args.interval)
    print(json.dumps({"at": None}), flush=True)
    return 1


def walk(sock: socket.socket, args: argparse.Namespace, deadline: float) -> dict[str, float | int | None]:
    """Every address of ``--then-range`` confirmed in order: all_at (None past ``deadline``), how many requests
    found the next address missing (``stalls``: 0 means each was in when first asked), and how long the walk
    took."""
    start = time.time()
    low, count = int(ipaddress.IPv4Address(args.then_range[0])), int(args.then_range[1])
    keys = [(low + i).to_bytes(4, "big") for i in range(count)]
    stalls = seq = 0
    while keys and time.monotonic() < deadline:
        seq += 1
        found = confirmed(sock, request(args.family, args.table, args.set_name, keys[:WALK], 1 << 20 | seq))
        del keys[:found]
        if keys and not found:
            stalls += 1
            time.sleep(args.interval)
    return {"all_at": None if keys else time.time(), "stalls": stalls, "walk_s": time.time() - start,
            "missing": len(keys)}


if __name__ == "__main__":
    raise SystemExit(main())
