"""The fleet's bucket on the cluster: the admin's connection and the bucket's creation (``--create-bucket``).

The bucket is a JetStream key-value bucket (stream ``KV_<bucket>``), made here by hand rather than through
nats-py's ``create_key_value``, which always allows rollups: with ``allow_rollup_hdrs`` on, any host allowed to
put its own keys could send ``Nats-Rollup: all`` and wipe every host's keys. History 1 (one value per key), a
value size limit, ``max_age`` only as a backstop (expiry comes from each value's ``until``), and replicas across
the cluster. Docs: docs/fleet.md ("The bucket", "Security").
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from pathlib import Path

import nats
from nats.aio.client import Client
from nats.js import api
from nats.js import errors as js_errors

from .nats_errors import PermissionWatch, Rejected, guarded

DUPLICATE_WINDOW = 120.0
MAX_VALUE = 1024  # bytes; values are at most 512 (the contract), the rest is slack, not room


def stream_name(bucket: str) -> str:
    return f"KV_{bucket}"


def bucket_config(bucket: str, *, replicas: int, max_age: float) -> api.StreamConfig:
    """The bucket's stream configuration (what nats-py's KV would make, with rollups refused)."""
    if replicas < 1 or replicas > 5:
        raise ValueError(f"replicas {replicas}: 1 to 5")
    if max_age <= 0:
        raise ValueError("max_age must be positive (it is the bucket's backstop)")
    return api.StreamConfig(
        name=stream_name(bucket),
        description="portsentinel fleet bans (made by portsentinel fleet setup)",
        subjects=[f"$KV.{bucket}.>"],
        retention=api.RetentionPolicy.LIMITS,
        max_msgs_per_subject=1,  # history 1
        max_msgs=-1,
        max_bytes=-1,
        max_age=max_age,
        max_msg_size=MAX_VALUE,
        storage=api.StorageType.FILE,
        num_replicas=replicas,
        discard=api.DiscardPolicy.NEW,
        duplicate_window=min(DUPLICATE_WINDOW, max_age),
        allow_rollup_hdrs=False,  # a host's Nats-Rollup: all would wipe the bucket
        deny_delete=True,
        deny_purge=False,  # the admin may purge delete markers; hosts have no permission to
        allow_direct=True,
    )


def tls_context(ca: Path) -> ssl.SSLContext:
    """TLS that trusts only the fleet's CA and checks the server's name or address."""
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


async def connect(servers: Sequence[str], *, seed: Path, ca: Path | None, watch: PermissionWatch,
                  inbox_prefix: str | None = None, name: str = "portsentinel", timeout: float = 5,
                  reconnects: int = 3) -> Client:
    """A connection with an nkey seed and TLS (when ``ca`` is given), its error callback feeding ``watch``."""
    kw: dict[str, object] = {}
    if inbox_prefix:
        kw["inbox_prefix"] = inbox_prefix
    if ca is not None:
        kw["tls"] = tls_context(ca)
    return await nats.connect(list(servers), nkeys_seed=str(seed), error_cb=watch.error_cb, name=name,
                              connect_timeout=timeout, max_reconnect_attempts=reconnects,
                              allow_reconnect=reconnects != 0, **kw)


def differences(old: api.StreamConfig, new: api.StreamConfig) -> list[str]:
    """The settings that matter to the fleet in which an existing bucket differs from ``new``."""
    fields = ("subjects", "max_msgs_per_subject", "max_age", "max_msg_size", "num_replicas", "discard",
              "allow_rollup_hdrs", "deny_delete", "allow_direct", "storage")
    return [f for f in fields if getattr(old, f) != getattr(new, f)]


async def create_bucket(nc: Client, watch: PermissionWatch, config: api.StreamConfig,
                        timeout: float = 30) -> tuple[str, api.StreamInfo]:
    """Create the bucket's stream, or bring an existing one to ``config``; returns ("created" | "updated: FIELDS"
    | "unchanged", its info). Failures raise :mod:`.nats_errors`' Denied / Rejected / Unreachable."""
    js = nc.jetstream(timeout=timeout)
    assert config.name is not None
    try:
        old = await guarded(js.stream_info(config.name), watch, f"$JS.API.STREAM.INFO.{config.name}")
    except Rejected as exc:
        if not isinstance(exc.__cause__, js_errors.NotFoundError):
            raise
        info = await guarded(js.add_stream(config), watch, f"$JS.API.STREAM.CREATE.{config.name}")
        return "created", info
    changed = differences(old.config, config)
    if not changed:
        return "unchanged", old
    info = await guarded(js.update_stream(config), watch, f"$JS.API.STREAM.UPDATE.{config.name}")
    return f"updated ({', '.join(changed)})", info
