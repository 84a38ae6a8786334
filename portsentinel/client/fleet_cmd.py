"""``portsentinel fleet …``: the fleet's admin commands (docs/fleet.md). ``fleet setup`` makes the CA, the server
certificates, one nkey per host, the servers' configuration with the per-host permissions, and (``--create-bucket``,
with the admin seed) the bucket on a running cluster."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from .fleet_status import add_status_parser


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Register ``fleet`` and its subcommands on the client's subparsers."""
    fl: argparse.ArgumentParser = sub.add_parser("fleet", help="ban sharing between hosts (docs/fleet.md)")
    fsub = fl.add_subparsers(dest="fleet_command", required=True, metavar="FLEET_COMMAND")
    add_status_parser(fsub)  # `fleet status` (portsentinel.client.fleet_status)
    st = fsub.add_parser("setup", help="make the fleet's CA, server certificates, per-host nkeys and the servers' "
                                       "permissions; --create-bucket makes the bucket on the running cluster")
    st.add_argument("--hosts", metavar="A,B,C", help="the fleet's host names ([A-Za-z0-9_-], 1 to 64 each)")
    st.add_argument("--servers", metavar="S1=ADDR,…", help="the NATS servers' names and IP addresses")
    st.add_argument("--out", metavar="DIR", required=True, help="where the files go (made or refreshed; 0600)")
    st.add_argument("--bucket", metavar="NAME", help="the bucket (default portsentinel_bans)")
    st.add_argument("--server-dir", metavar="DIR", help="where a server's files go on it (default /etc/nats-server; "
                                                        "{name} is replaced by the server's name)")
    st.add_argument("--host-dir", metavar="DIR", help="where a host's seed and CA go on it "
                                                      "(default /etc/portsentinel/fleet)")
    st.add_argument("--store-dir", metavar="DIR", help="the servers' JetStream store (default "
                                                       "/var/lib/nats/jetstream; {name}: the server's name)")
    st.add_argument("--create-bucket", action="store_true",
                    help="create (or correct) the bucket on the cluster with DIR/admin.nk and DIR/ca.pem")
    st.add_argument("--replicas", type=int, metavar="N", help="the bucket's replicas (default: servers, at most 3)")
    st.add_argument("--max-age", default="30d", metavar="DURATION",
                    help="the bucket's backstop expiry (default 30d; fleet.conf bucket_max_age)")
    st.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS",
                    help="how long --create-bucket waits for the cluster (default 30)")
    st.set_defaults(func=cmd_fleet_setup)
    return fl


def _fail(message: str) -> int:
    print(f"portsentinel fleet setup: {message}", file=sys.stderr)
    return 2


def cmd_fleet_setup(args: argparse.Namespace) -> int:
    from portsentinel.common.values import duration
    from portsentinel.fleet import setup as S
    from portsentinel.fleet.setup_files import read_summary, write_setup

    out = Path(args.out)
    if not args.hosts and not args.create_bucket:
        return _fail("give --hosts and --servers (make the files), --create-bucket, or both")
    if args.hosts and not args.servers:
        return _fail("--hosts needs --servers (S1=ADDR,S2=ADDR,S3=ADDR)")
    try:
        bucket = S.parse_bucket(args.bucket) if args.bucket else None
        if args.hosts:
            plan = S.Plan(S.parse_hosts(args.hosts), S.parse_servers(args.servers),
                          bucket=bucket or S.DEFAULT_BUCKET, server_dir=args.server_dir or S.SERVER_DIR,
                          host_dir=args.host_dir or S.HOST_DIR, store_dir=args.store_dir or S.STORE_DIR)
            done = write_setup(plan, out)
            print(f"wrote {len(done.written)} file(s) in {out} (kept {len(done.kept)}): "
                  f"{len(plan.hosts)} host(s), {len(plan.servers)} server(s), bucket {plan.bucket}")
            where = {"s": plan.server_dir.replace("{name}", "NAME"), "h": plan.host_dir.replace("{name}", "NAME")}
            print(f"  servers: copy {out}/servers/NAME/ to {where['s']}/ on each; hosts: {out}/hosts/NAME/ "
                  f"to {where['h']}/ (fleet.local to /etc/portsentinel/); keep {out}/ca.key and admin.nk here")
        if not args.create_bucket:
            return 0
        summary = read_summary(out)
        urls = S.Plan((), S.parse_servers(args.servers)).urls() if args.servers else summary.urls
        bucket = bucket or summary.bucket
        replicas = args.replicas or min(3, len(urls))
        try:
            max_age = duration(args.max_age)
        except ValueError as exc:
            return _fail(f"--max-age: {exc}")
        if not 1 <= replicas <= len(urls):
            return _fail(f"--replicas {replicas}: 1 to the number of servers ({len(urls)})")
    except S.SetupError as exc:
        return _fail(str(exc))
    except OSError as exc:
        return _fail(f"{exc.filename or out}: {exc.strerror or exc}")
    return _create_bucket(urls, out, bucket, replicas, max_age, args.timeout)


def _create_bucket(urls: list[str], out: Path, bucket: str, replicas: int, max_age: float, timeout: float) -> int:
    from nats import errors as nats_errors

    from portsentinel.fleet import bucket as B
    from portsentinel.fleet.nats_errors import FleetNatsError, PermissionWatch

    for need in (out / "admin.nk", out / "ca.pem"):
        if not need.exists():
            return _fail(f"{need}: missing (made by portsentinel fleet setup --hosts … --servers …)")

    async def run() -> tuple[str, int, bool]:
        watch = PermissionWatch()
        nc = await B.connect(urls, seed=out / "admin.nk", ca=out / "ca.pem", watch=watch, name="portsentinel-setup",
                             timeout=min(timeout, 10))
        try:
            state, info = await B.create_bucket(nc, watch, B.bucket_config(bucket, replicas=replicas,
                                                                            max_age=max_age), timeout=timeout)
            return state, info.config.num_replicas or 1, bool(info.config.allow_rollup_hdrs)
        finally:
            await nc.close()

    try:
        state, got_replicas, rollups = asyncio.run(asyncio.wait_for(run(), timeout + 15))
    except FleetNatsError as exc:
        return _fail(f"bucket {bucket}: {exc}")
    except (OSError, TimeoutError, nats_errors.Error) as exc:
        return _fail(f"cannot reach the cluster ({', '.join(urls)}): {type(exc).__name__}: {exc}")
    print(f"bucket {bucket} {state}: replicas {got_replicas}, history 1, max_age {max_age:.0f}s, "
          f"rollups {'ALLOWED (!)' if rollups else 'refused'}")
    return 0 if not rollups else 1
