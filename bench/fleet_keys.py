"""A fleet host's bulk client for bench/fleet_e2e_bench.py, run inside that host's lab namespace with its own nkey
seed, the fleet's CA and its inbox prefix (nothing leaves the lab).

``fill``: put ``--count`` valid ban values under this host's keys (``<host>.portsentinel.<addr>``, addresses from
``--first`` up), ``until`` = now + ``--ttl``; prints the seconds the acknowledged puts took and the first put's
time. ``watch``: a bare
nats-py subscription fed by the host's one consumer ``ps_watch_<host>`` (the floor of a joining host's catch-up; the
host's permissions allow no other consumer); prints the seconds until it has received ``--count`` keys with
nothing pending.

    python bench/fleet_keys.py fill --host b --seed b.nk --ca ca.pem --count 100000 --first 100.64.0.0
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import os
import ssl
import time

import nats

from portsentinel.fleet.consumer import (
    consumer_name,
    create_request,
    create_subject,
    delete_subject,
    parse_ack,
)

BUCKET = "portsentinel_bans"


async def connect(args: argparse.Namespace) -> nats.aio.client.Client:
    tls = ssl.create_default_context(cafile=args.ca)
    return await nats.connect(os.environ["PS_NATS_SERVERS"].split(","), nkeys_seed=args.seed, tls=tls,
                              inbox_prefix=f"_INBOX_{args.host}", connect_timeout=5, max_reconnect_attempts=3)


#: fill: the addresses of the last puts in the stream's order (highest sequences), which a joining host's
#: responder applies last: once they are in force, so is the rest (bench/fleet_e2e_bench.py).
LAST: list[str] = []


async def fill(args: argparse.Namespace) -> tuple[float, float]:
    nc = await connect(args)
    order: list[tuple[int, str]] = []
    js = nc.jetstream(timeout=30)
    first = int(ipaddress.IPv4Address(args.first))
    now = time.time()
    start = time.monotonic()
    first_put = time.time()
    for base in range(0, args.count, 5000):
        futures = []
        addrs = []
        for i in range(base, min(base + 5000, args.count)):
            addr = str(ipaddress.IPv4Address(first + i))
            addrs.append(addr)
            value = {"v": 1, "addr": addr, "jail": "portsentinel", "until": round(now + args.ttl, 3), "scan": "syn",
                     "verified": 0, "offence": 1, "at": round(now, 3)}
            subject = f"$KV.{BUCKET}.{args.host}.portsentinel.{addr.replace('.', '-')}"
            futures.append(await js.publish_async(subject, json.dumps(value, separators=(",", ":")).encode()))
        acks = await asyncio.gather(*futures)
        order += [(int(ack.seq), addr) for ack, addr in zip(acks, addrs, strict=True)]
    took = time.monotonic() - start
    LAST[:] = [addr for _, addr in sorted(order)[-16:]]
    await nc.close()
    return took, first_put


async def watch(args: argparse.Namespace) -> tuple[float, float]:
    """A bare nats-py subscription fed by the host's one consumer (``ps_watch_<host>``: its permissions allow no
    other), made by one API request as the fleet daemon makes it; flow control answered at once."""
    nc = await connect(args)
    got = 0
    done = asyncio.get_running_loop().create_future()

    async def on_msg(msg: nats.aio.msg.Msg) -> None:
        nonlocal got
        ack = parse_ack(msg.reply)
        if ack is not None:
            got += 1
            if got >= args.count and ack.pending == 0 and not done.done():
                done.set_result(time.monotonic())
        elif msg.reply.startswith("$JS.FC."):
            await nc.publish(msg.reply, b"")

    start = time.monotonic()
    first = time.time()
    stream, name = f"KV_{BUCKET}", consumer_name(args.host)
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox, cb=on_msg)
    await nc.request(delete_subject(stream, name), b"", timeout=10)
    await nc.request(create_subject(stream, name),
                     create_request(stream, name, deliver=inbox, filter_subject=f"$KV.{BUCKET}.>", after_seq=0,
                                    heartbeat=5.0, inactive=60.0), timeout=10)
    end = await asyncio.wait_for(done, args.limit)
    await sub.unsubscribe()
    await nc.request(delete_subject(stream, name), b"", timeout=10)
    await nc.close()
    return float(end - start), first


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("what", choices=("fill", "watch"))
    p.add_argument("--host", required=True)
    p.add_argument("--seed", required=True)
    p.add_argument("--ca", required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--first", default="100.64.0.0")
    p.add_argument("--ttl", type=float, default=1800)
    p.add_argument("--limit", type=float, default=120)
    args = p.parse_args()
    took, start = asyncio.run(fill(args) if args.what == "fill" else watch(args))
    print(json.dumps({"seconds": took, "start": start, "last": LAST}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
