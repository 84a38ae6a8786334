"""A restart over a big store (issue 13 "Speed", restart): a responder started over 200,000 bans in its sqlite
puts exactly the unexpired ones into the victim namespace's nft set (two chunked transactions and more:
responder.actions.restore), records the 1% expired ones as lifted (their unbans ran, one nft batch deleting 2,000
elements from the big set; their rows are gone) and does not re-apply a ban of an address that became protected
(the victim's own address: ignoreself).

The addresses' sets are hash sets (``flags timeout``): with the interval sets of before, 200,000 took 38 s on the
2-core CI VM and 500 expired rows among 50,000 took over 30 s to lift (docs/performance.md, "Restart")."""

from __future__ import annotations

import ipaddress
import json
import sqlite3
import time
from pathlib import Path

import pytest

from portsentinel.responder.adapters.store import Store
from tests.lab.netns import Lab
from tests.lab.nftset import set_addresses
from tests.lab.pipeline import ResponderProcess, make_config

pytestmark = pytest.mark.lab

N = 200_000
EXPIRED = 2_000  # lifted in one nft batch (Executor.lift_many)


def test_restart_over_200000_bans_restores_exactly_the_unexpired(mlab: Lab, tmp_path: Path, journald: str) -> None:
    cfg = make_config(tmp_path, f"[DEFAULT]\nlogpath = {tmp_path}/alerts.jsonl\nbantime = 7200\n"
                                "maxbans_per_minute = 0\n[portsentinel]\nenabled = true\nfilter = portsentinel\n"
                                "action = nftables[name=scan]\n")
    (tmp_path / "alerts.jsonl").touch(mode=0o640)
    db = tmp_path / "state" / "responder.sqlite3"
    Store(str(db)).close()  # the responder's own schema
    start = int(ipaddress.IPv4Address("100.64.0.1"))
    ips = [str(ipaddress.IPv4Address(start + i)) for i in range(N)]
    live, expired = ips[:N - EXPIRED - 1], ips[N - EXPIRED - 1:N - 1]
    own = mlab.victim.addr4  # banned while it was not the host's own address; protected now
    now = time.time()
    info = json.dumps({"port": "1", "proto": "tcp", "scan": "syn"}, sort_keys=True)
    con = sqlite3.connect(str(db))
    with con:
        con.executemany("INSERT INTO bans VALUES (?,?,?,?,?,?,?)",
                        [("portsentinel", ip, now - 60, now + 3600, 1, 1, info) for ip in live]
                        + [("portsentinel", ip, now - 7200, now - 30, 1, 1, info) for ip in expired]
                        + [("portsentinel", own, now - 60, now + 3600, 1, 1, info)])
    con.close()
    resp = ResponderProcess(mlab.victim, tmp_path, cfg, backend="pyinotify")
    t0 = time.monotonic()
    resp.start(timeout=30)  # answering on its socket: the restore is done
    try:
        assert time.monotonic() - t0 < 30
        held = set_addresses(mlab.victim, "scan_v4", missing_ok=True)
        assert held == set(live), f"{len(held)} of {len(live)} in the set; {resp.stderr()[-2000:]}"
        deadline = time.monotonic() + 15
        lifted: set[str] = set()
        while time.monotonic() < deadline:
            lifted = {r["PS_SRC"] for r in resp.records()
                      if r.get("PS_EVENT") == "unban" and r.get("PS_DETAIL") == "expired while stopped"}
            if lifted >= set(expired):
                break
            time.sleep(0.25)
        assert lifted == set(expired)
        assert any(r.get("PS_EVENT") == "unban" and r.get("PS_SRC") == own
                   and r.get("PS_DETAIL", "").startswith("never banned now") for r in resp.records())
    finally:
        resp.stop()
    con = sqlite3.connect(str(db))
    rows = {ip for (ip,) in con.execute("SELECT ip FROM bans")}
    pending = con.execute("SELECT count(*) FROM unbans").fetchone()[0]
    con.close()
    assert rows == set(live) and pending == 0  # the expired and the protected rows lifted, nothing pending
