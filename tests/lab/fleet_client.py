"""A fleet host's client for lab tests: run in a host's namespace (``NatsLab.run``), it connects with the host's
nkey seed, the fleet's CA and its inbox prefix, runs a list of operations, and prints one JSON result per
operation. Failures are reported the way the fleet daemon sees them (portsentinel.fleet.nats_errors): ``denied``,
``rejected``, ``unreachable``.

    python -m tests.lab.fleet_client --seed a.nk --ca ca.pem --inbox _INBOX_a '[{"op": "put", ...}, ...]'

Operations: ``put`` / ``delete`` / ``get`` a key; ``rollup`` (a put with a ``Nats-Rollup`` header); ``api`` (a
request to a JetStream API subject); ``sub`` (subscribe to a subject, report a violation); ``fill`` (``count``
keys under a prefix, published without acknowledgements); ``watch`` (the fleet daemon's watch of the whole
bucket through consumer ``name``, counting the keys it receives until it has caught up); ``consumer`` (a bare
consumer create, named or not, deleted again when made); ``info`` (the bucket stream's message count and rollup
setting).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from nats.aio.client import Client
from nats.js.client import JetStreamContext
from nats.js.kv import KeyValue

from portsentinel.fleet.bucket import connect, stream_name
from portsentinel.fleet.consumer import Entry
from portsentinel.fleet.nats_errors import FleetNatsError, PermissionWatch, guarded
from portsentinel.fleet.pushwatch import PushWatch


async def _op(nc: Client, js: JetStreamContext, kv: KeyValue, bucket: str, watch: PermissionWatch,
              op: dict[str, Any]) -> dict[str, Any]:
    kind = op["op"]
    subject = f"$KV.{bucket}.{op['key']}" if "key" in op else op.get("subject")
    try:
        if kind == "put":
            rev = await guarded(kv.put(op["key"], op["value"].encode()), watch, subject)
            return {"ok": True, "revision": rev}
        if kind == "delete":
            await guarded(kv.delete(op["key"]), watch, subject)
            return {"ok": True}
        if kind == "get":
            try:
                entry = await guarded(kv.get(op["key"]), watch, None)
            except FleetNatsError as exc:
                if "KeyNotFound" in exc.detail or "KeyDeleted" in exc.detail:
                    return {"ok": True, "value": None}
                raise
            return {"ok": True, "value": (entry.value or b"").decode()}
        if kind == "rollup":
            ack = await guarded(js.publish(str(subject), op["value"].encode(),
                                           headers={"Nats-Rollup": op["rollup"]}), watch, subject)
            return {"ok": True, "seq": ack.seq}
        if kind == "api":
            msg = await guarded(nc.request(op["subject"], op.get("payload", "").encode(), timeout=op.get("timeout", 5)),
                                watch, op["subject"])
            answer = json.loads(msg.data or b"{}")
            if "error" in answer:
                return {"ok": False, "failure": "rejected", "detail": json.dumps(answer["error"])}
            return {"ok": True, "answer": answer}
        if kind == "sub":
            got: list[str] = []

            async def on_msg(msg: Any) -> None:
                got.append(msg.subject)

            refusal = watch.waiter(op["subject"])
            try:
                sub = await nc.subscribe(op["subject"], cb=on_msg)
                await nc.flush(timeout=5)
                # the server's refusal may come after the PONG (2.9.10 does so): wait a little for it
                done, _ = await asyncio.wait({refusal}, timeout=op.get("grace", 1.0))
                await sub.unsubscribe()
            finally:
                watch.forget(refusal)
            if done:
                return {"ok": False, "failure": "denied", "detail": f"subscription to {op['subject']}", "got": got}
            return {"ok": True, "got": got}
        if kind == "fill":
            # Plain publishes (no per-message acknowledgement) to the host's own subjects, then wait until the
            # stream holds them all: the fastest way in, and still subject to the host's permissions.
            start = time.monotonic()
            before = (await js.stream_info(stream_name(bucket))).state.messages
            for i in range(op["count"]):
                key = f"{op['prefix']}.10-{i >> 16 & 255}-{i >> 8 & 255}-{i & 255}"
                await nc.publish(f"$KV.{bucket}.{key}", b'{"v":1}')
                if i % 2000 == 1999:
                    await nc.flush(timeout=30)
            await nc.flush(timeout=30)
            stored = before
            while time.monotonic() - start < op.get("timeout", 90):
                stored = (await js.stream_info(stream_name(bucket))).state.messages
                if stored >= before + op["count"]:
                    break
                await asyncio.sleep(0.2)
            return {"ok": stored >= before + op["count"], "count": op["count"], "stored": stored - before,
                    "seconds": round(time.monotonic() - start, 2)}
        if kind == "watch":
            # the fleet daemon's own watch (portsentinel.fleet.pushwatch: the host's one consumer, flow control)
            start = time.monotonic()
            received = 0
            caught_up: asyncio.Future[None] = asyncio.get_running_loop().create_future()

            def on_entries(entries: list[Entry]) -> None:
                nonlocal received
                received += len(entries)
                if entries[-1].pending == 0 and not caught_up.done():
                    caught_up.set_result(None)

            pw = PushWatch(nc, watch, stream=stream_name(bucket), prefix=f"$KV.{bucket}.", name=op["name"],
                           heartbeat=5.0, on_entries=on_entries)
            await pw.start(0)
            try:
                await asyncio.wait_for(caught_up, op.get("timeout", 60))
            except TimeoutError:
                pass
            await pw.stop()
            return {"ok": True, "received": received, "seconds": round(time.monotonic() - start, 2)}
        if kind == "consumer":
            # a bare consumer create: named (2.9+ subject) or unnamed (the old subject), deleted again if made
            stream = stream_name(bucket)
            name = op.get("name")
            subject = f"$JS.API.CONSUMER.CREATE.{stream}" + (f".{name}" if name else "")
            config: dict[str, Any] = {"deliver_subject": nc.new_inbox(), "ack_policy": "none",
                                      "inactive_threshold": 30_000_000_000, "mem_storage": True, "num_replicas": 1}
            if name:
                config["name"] = name
            body = json.dumps({"stream_name": stream, "config": config}).encode()
            msg = await guarded(nc.request(subject, body, timeout=op.get("timeout", 5)), watch, subject)
            answer = json.loads(msg.data or b"{}")
            if "error" in answer:
                return {"ok": False, "failure": "rejected", "detail": json.dumps(answer["error"])}
            made = str(answer.get("name", ""))
            delete = f"$JS.API.CONSUMER.DELETE.{stream}.{made}"
            try:
                await guarded(nc.request(delete, b"", timeout=5), watch, delete)
                deleted = True
            except FleetNatsError:
                deleted = False
            return {"ok": True, "name": made, "deleted": deleted}
        if kind == "info":
            info = await guarded(js.stream_info(stream_name(bucket)), watch, None)
            return {"ok": True, "messages": info.state.messages,
                    "allow_rollup_hdrs": bool(info.config.allow_rollup_hdrs),
                    "history": info.config.max_msgs_per_subject, "replicas": info.config.num_replicas}
        raise ValueError(f"unknown op {kind!r}")
    except FleetNatsError as exc:
        return {"ok": False, "failure": exc.failure.value, "detail": exc.detail}


async def main_async(args: argparse.Namespace) -> list[dict[str, Any]]:
    servers = args.servers or os.environ["PS_NATS_SERVERS"].split(",")
    watch = PermissionWatch()
    nc = await connect(servers, seed=Path(args.seed), ca=Path(args.ca) if args.ca else None, watch=watch,
                       inbox_prefix=args.inbox, name="lab-client", timeout=5, reconnects=3)
    try:
        js = nc.jetstream(timeout=args.timeout)
        kv = await js.key_value(args.bucket)
        return [await _op(nc, js, kv, args.bucket, watch, op) for op in json.loads(args.ops)]
    finally:
        await nc.close()


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--seed", required=True)
    p.add_argument("--ca")
    p.add_argument("--inbox")
    p.add_argument("--bucket", default="portsentinel_bans")
    p.add_argument("--servers", nargs="*")
    p.add_argument("--timeout", type=float, default=5.0, help="JetStream request timeout")
    p.add_argument("ops", help="a JSON list of operations")
    args = p.parse_args()
    results = asyncio.run(asyncio.wait_for(main_async(args), 240))
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
