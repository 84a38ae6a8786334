"""portsentinel-fleet in the NATS lab: real daemons in host namespaces, a 3-server JetStream cluster.

A host's responder is played by the test: it appends decision records to the host's decisions file (the
JSON-lines transport) and reads what the daemon writes for the ``[fleet]`` jail. The joint five-host scan->ban
test with the real responder lives with the responder's side (tests/integration/test_fleet_lab.py).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from tests.lab.fleetd import Daemon, make_bucket
from tests.lab.nats import NatsLab, nats_lab, nats_problem

pytestmark = pytest.mark.lab

STREAM = "KV_portsentinel_bans"

GET = """
import asyncio, os, sys, nats
async def main():
    nc = await nats.connect(os.environ["PS_NATS_SERVERS"].split(","), connect_timeout=3)
    kv = await nc.jetstream(timeout=15).key_value("portsentinel_bans")
    try:
        await kv.get(sys.argv[1])
        print("PUT")
    except nats.js.errors.KeyNotFoundError:  # KeyDeletedError too
        print("none")
    await nc.close()
asyncio.run(main())
"""

DROP_CONSUMERS = """
import asyncio, os, nats
async def main():
    nc = await nats.connect(os.environ["PS_NATS_SERVERS"].split(","), connect_timeout=3)
    jsm = nc.jsm(timeout=15)
    for info in await jsm.consumers_info("KV_portsentinel_bans"):
        await jsm.delete_consumer("KV_portsentinel_bans", info.name)
        print(info.name)
    await nc.close()
asyncio.run(main())
"""

FLOOD = """
import asyncio, json, os, sys, time, nats
async def main():
    nc = await nats.connect(os.environ["PS_NATS_SERVERS"].split(","), connect_timeout=3)
    js = nc.jetstream(timeout=15)
    now = time.time()
    futures = []
    for i in range(int(sys.argv[1])):
        addr = f"100.64.{i // 256}.{i % 256}"
        value = {"v": 1, "addr": addr, "jail": "portsentinel", "until": now + 600, "scan": "syn", "verified": 0,
                 "offence": 1, "at": now}
        subject = "$KV.portsentinel_bans.x.portsentinel." + addr.replace(".", "-")
        futures.append(await js.publish_async(subject, json.dumps(value).encode()))
    await asyncio.gather(*futures)
    await nc.close()
asyncio.run(main())
"""


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[NatsLab, dict[str, Daemon], Path]]:
    problem = nats_problem()
    if problem:
        pytest.fail(f"NATS lab unavailable: {problem}")
    work = tmp_path_factory.mktemp("fleetd")
    with nats_lab(("a", "b", "c", "x", "j"), servers=3) as lab:
        make_bucket(lab, "a")
        daemons = {"a": Daemon(lab, "a", work).start(),
                   "b": Daemon(lab, "b", work, origin_rate=1000, origin_max=5000).start()}
        try:
            yield lab, daemons, work
        finally:
            for daemon in daemons.values():
                daemon.stop()


def test_publish_and_apply_between_two_hosts(fleet: tuple[NatsLab, dict[str, Daemon], Path]) -> None:
    _, d, _ = fleet
    a, b = d["a"], d["b"]
    a.decide("ban", "203.0.113.7")
    a.decide("ban", "203.0.113.8", share="0")  # a jail that does not share
    b.decide("ban", "203.0.113.7")  # a second origin for the same source
    b.wait(lambda: "203.0.113.7" in b.banned(), 15, "a's ban on b")
    a.wait(lambda: "203.0.113.7" in a.banned(), 15, "b's ban on a")
    line = next(x for x in b.lines() if x["PS_SRC"] == "203.0.113.7")
    assert line["PS_ORIGIN"] == "a" and line["PS_ORIGIN_JAIL"] == "portsentinel" and line["PS_SCAN"] == "syn"
    assert line["SYSLOG_IDENTIFIER"] == "portsentinel-fleet" and float(line["PS_UNTIL"]) > time.time() + 500
    a.decide("unban", "203.0.113.7")
    b.wait(lambda: any(x["PS_EVENT"] == "unban" and x["PS_SRC"] == "203.0.113.7" for x in b.lines()), 15,
           "a's unban on b")
    assert "203.0.113.8" not in b.banned()
    assert b.status()["connected"] and b.status()["bans_by_origin"].get("a", 0) == 0


def test_spool_while_the_cluster_is_down_then_publish(fleet: tuple[NatsLab, dict[str, Daemon], Path]) -> None:
    lab, d, _ = fleet
    a, b = d["a"], d["b"]
    lab.kill_cluster()
    a.wait(lambda: not a.status()["connected"], 15, "a notices the outage")
    addrs = [f"198.51.100.{i}" for i in range(1, 6)]
    for addr in addrs:
        a.decide("ban", addr)
    a.wait(lambda: a.status()["spool"] == len(addrs), 10, "spooled")
    lab.restart_cluster()
    b.wait(lambda: set(addrs) <= set(b.banned()), 60, "spooled bans published on reconnect")
    a.wait(lambda: a.status()["spool"] == 0, 10, "spool drained")


def test_resume_after_a_restart_without_replay(fleet: tuple[NatsLab, dict[str, Daemon], Path]) -> None:
    _, d, _ = fleet
    a, b = d["a"], d["b"]
    b.wait(lambda: b.status()["lag"] == 0, 15, "b caught up")
    before = len(b.lines())
    seq = b.status()["last_seq"]
    b.stop(signal.SIGKILL)  # a crash: the sequence it had committed is where it resumes
    addrs = [f"198.51.100.{i}" for i in range(20, 23)]
    for addr in addrs:
        a.decide("ban", addr)
    time.sleep(0.5)
    b.start()
    b.wait(lambda: set(addrs) <= set(b.banned()), 20, "bans made while b was down")
    time.sleep(1.5)
    new = b.lines()[before:]
    assert sorted(x["PS_SRC"] for x in new) == addrs  # only those: nothing replayed
    assert b.status()["last_seq"] > seq


def test_killing_the_stream_leader_loses_nothing(fleet: tuple[NatsLab, dict[str, Daemon], Path]) -> None:
    lab, d, _ = fleet
    a, b = d["a"], d["b"]
    leader = lab.stream_leader(STREAM)
    addrs = [f"192.0.2.{i}" for i in range(1, 101)]
    for i, addr in enumerate(addrs):
        a.decide("ban", addr)
        if i == 30:
            lab.kill(leader)
        time.sleep(0.01)
    b.wait(lambda: set(addrs) <= set(b.banned()), 60, "every ban through the election")
    a.wait(lambda: a.status()["spool"] == 0, 10, "spool drained")
    lab.start(leader)


def test_late_joiner_catches_up(fleet: tuple[NatsLab, dict[str, Daemon], Path]) -> None:
    lab, d, work = fleet
    a, b = d["a"], d["b"]
    a.decide("ban", "203.0.113.50")
    b.wait(lambda: "203.0.113.50" in b.banned(), 15, "the ban on b")
    active = {addr for addr, origin in b.banned().items() if origin == "a"} - {"203.0.113.7"}
    c = d["c"] = Daemon(lab, "c", work).start()
    try:
        c.wait(lambda: active <= set(c.banned()) and c.status()["bans_by_origin"].get("a") == len(active), 30,
               "the whole active set on the joiner")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nmissing on c: {sorted(active - set(c.banned()))[:10]}; "
                             f"c: {c.status()}") from None
    # a lifted its ban of 203.0.113.7 before c joined: only b's ban of it reaches c
    assert [x["PS_ORIGIN"] for x in c.lines() if x["PS_SRC"] == "203.0.113.7"] == ["b"]


def test_per_origin_rate_cap_under_a_flood(fleet: tuple[NatsLab, dict[str, Daemon], Path]) -> None:
    lab, d, _ = fleet
    b = d["b"]
    lab.python("x", FLOOD, "3000", timeout=60)  # a compromised host puts 3,000 bans under its own name
    b.wait(lambda: b.status()["lag"] == 0 and b.status()["bans_by_origin"].get("x", 0) >= 1000, 30,
           "the flood handled")
    time.sleep(1.5)
    status = b.status()
    assert status["bans_by_origin"]["x"] == 1000  # origin_rate = 1000 a minute
    assert status["refused"] >= 2000
    assert sum(1 for x in b.lines() if x.get("PS_ORIGIN") == "x") == 1000
    # the audit: the refusals are a few aggregated journal records, not one per value
    deadline = time.monotonic() + 15
    while True:
        out = subprocess.run(["journalctl", "-o", "json", "--no-pager", "SYSLOG_IDENTIFIER=portsentinel-fleet",
                              "PS_EVENT=ignored", "PS_ORIGIN=x"], capture_output=True, text=True, timeout=30).stdout
        records = [json.loads(line) for line in out.splitlines() if line.strip()]
        if sum(int(r["PS_HITS"]) for r in records) >= 2000 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert sum(int(r["PS_HITS"]) for r in records) >= 2000 and len(records) <= 10
    # a restart keeps the view (the 1,000 bans, whether their commit went row by row or into the watch's log,
    # which the start folds into its table) and replays nothing
    lines = len(b.lines())
    b.stop()
    b.start()
    b.wait(lambda: b.status()["bans_by_origin"].get("x") == 1000 and b.status()["lag"] == 0, 20, "the view kept")
    time.sleep(1.0)
    assert len(b.lines()) == lines


def _lifted_fleet_wide(daemon: Daemon, addr: str) -> bool:
    return any(x["PS_EVENT"] == "unban" and x["PS_ORIGIN_JAIL"] == "_unban" and x["PS_SRC"] == addr
               for x in daemon.lines())


def test_fleet_wide_unban(fleet: tuple[NatsLab, dict[str, Daemon], Path]) -> None:
    lab, d, _ = fleet
    a, b, c = d["a"], d["b"], d["c"]
    a.decide("ban", "203.0.113.60")
    b.decide("ban", "203.0.113.60")
    c.wait(lambda: sum(1 for x in c.lines() if x["PS_SRC"] == "203.0.113.60") == 2, 15, "two origins on c")
    a.decide("unban", "203.0.113.60", fleet=True)  # portsentinel unban --fleet on a
    for host in (b, c):
        host.wait(partial(_lifted_fleet_wide, host, "203.0.113.60"), 15, "fleet-wide unban")
    # b deletes its own key for the address; the marker stands
    b.wait(lambda: lab.python("x", GET, "b.portsentinel.203-0-113-60").stdout.strip() != "PUT", 15, "b's key gone")
    assert lab.python("x", GET, "a._unban.203-0-113-60").stdout.strip() == "PUT"
    b.decide("ban", "203.0.113.61")  # other bans of b are untouched
    c.wait(lambda: c.banned().get("203.0.113.61") == "b", 15, "b's next ban")
    assert lab.python("x", GET, "b.portsentinel.203-0-113-61").stdout.strip() == "PUT"


def test_journal_input_and_a_vanished_consumer(fleet: tuple[NatsLab, dict[str, Daemon], Path]) -> None:
    """decisions = journal (the Debian default): the responder's records by uid 0 are published, a forged one
    (another uid) is not. Then every consumer of the bucket is deleted on the server: the watches recover."""
    from systemd import journal

    lab, d, work = fleet
    b = d["b"]
    j = d["j"] = Daemon(lab, "j", work, decisions="journal").start()
    time.sleep(0.5)
    forged = ("from systemd import journal; journal.send('forged', SYSLOG_IDENTIFIER='portsentinel-responder', "
              "PS_EVENT='ban', PS_SHARE='1', PS_JAIL='portsentinel', PS_SRC='203.0.113.71', PS_BANTIME='600')")
    subprocess.run(["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups", sys.executable, "-c",
                    forged], check=True, timeout=30)
    journal.send("jail portsentinel: banned 203.0.113.70", SYSLOG_IDENTIFIER="portsentinel-responder",
                 PS_EVENT="ban", PS_SHARE="1", PS_JAIL="portsentinel", PS_SRC="203.0.113.70", PS_BANTIME="600",
                 PS_TIME=f"{time.time():.6f}")
    j.nudge()
    b.wait(lambda: b.banned().get("203.0.113.70") == "j", 15, "j's journal decision on b")
    assert "203.0.113.71" not in b.banned()
    dropped = lab.python("x", DROP_CONSUMERS).stdout.split()
    assert dropped  # every host's watch had one
    j.decide("ban", "203.0.113.72")  # in j's decisions file, which a journal-reading daemon does not follow
    journal.send("jail portsentinel: banned 203.0.113.73", SYSLOG_IDENTIFIER="portsentinel-responder",
                 PS_EVENT="ban", PS_SHARE="1", PS_JAIL="portsentinel", PS_SRC="203.0.113.73", PS_BANTIME="600",
                 PS_TIME=f"{time.time():.6f}")
    j.nudge()
    b.wait(lambda: b.banned().get("203.0.113.73") == "j", 30, "a ban after the consumers vanished")
    assert "203.0.113.72" not in b.banned()
