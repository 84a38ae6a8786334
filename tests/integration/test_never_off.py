"""Protection survives what admins do every day (issue 10, items 1, 2, 4, 5; design.md §3 "Never silently off").

A real responder in the victim namespace, real nft / iptables / ipset / routes and a hosts.deny file the test owns:
a reload with a typo, a good reload that changes the action, `nft flush ruleset` and `iptables -F`, kill -9 at each
step of a ban and an unban, offence counts past 1,100, a jail named `2fast`, a poison record.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.lab.detector import tool
from tests.lab.netns import Host, Lab
from tests.lab.pipeline import ResponderProcess, make_config

pytestmark = pytest.mark.lab


def _jail(base: Path, name: str, actions: str, bantime: str = "600", extra: str = "") -> str:
    return (f"[DEFAULT]\nlogpath = {base}/alerts.jsonl\nbantime = {bantime}\nbantime.increment = false\n"
            f"maxbans_per_minute = 0\nignoreip =\n[{name}]\nenabled = true\nfilter = portsentinel\n"
            f"action = {actions}\n{extra}")


def _record(path: Path, src: str, **extra: str) -> None:
    rec = {"MESSAGE": f"attackalert: TCP SYN/Normal scan from host: {src}/{src} to TCP port: 1",
           "SYSLOG_IDENTIFIER": "portsentinel-detector", "PS_EVENT": "scan", "PS_SRC": src, "PS_PROTO": "tcp",
           "PS_PORT": "1", "PS_SCAN": "syn", "PS_MODE": "stcp", "PS_VERIFIED": "0", **extra}
    with open(path, "a") as fh:
        fh.write(json.dumps(rec) + "\n")


def _alerts(base: Path) -> Path:
    path = base / "alerts.jsonl"
    path.touch(mode=0o640)
    return path


def _until(what: Callable[[], bool], timeout: float = 10.0) -> float | None:
    """Seconds until ``what()`` held (polled), or None when it never did within ``timeout``."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if what():
            return time.monotonic() - start
        time.sleep(0.02)
    return None


def _nft(host: Host, *args: str) -> str:
    return host.run(["nft", *args], check=False).stdout


def _in_set(host: Host, set_name: str, ip: str) -> bool:
    return f" {ip}" in _nft(host, "list", "set", "inet", "portsentinel", set_name).replace("{", " ").replace(",", " ")


def _ipt_rules(host: Host, chain: str, ip: str) -> int:
    return sum(1 for line in host.run(["iptables", "-S", chain], check=False).stdout.splitlines() if f"{ip}/32" in line)


def _routes(host: Host, ip: str) -> int:
    return sum(1 for line in host.run(["ip", "route", "show", "type", "blackhole"]).stdout.splitlines()
               if line.split()[1:2] == [ip])


def _deny(path: Path, ip: str) -> int:
    return sum(1 for line in path.read_text().splitlines() if line.strip() == f"ALL: {ip}") if path.exists() else 0


def _reload(resp: ResponderProcess) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tool("portsentinel"), "--socket", resp.socket, "reload"], capture_output=True, text=True,
                          timeout=60)


# ---------------------------------------------------------------------------------------------- item 1: reload
def test_failed_reload_changes_nothing_and_good_reload_moves_bans(mlab: Lab, tmp_path: Path) -> None:
    vic = mlab.victim
    cfg = make_config(tmp_path, _jail(tmp_path, "rl", "nftables[name=rl]"))
    with ResponderProcess(vic, tmp_path, cfg) as resp:
        assert resp.ask("ban", "rl", "198.51.100.41")["ok"]
        assert _in_set(vic, "rl_v4", "198.51.100.41")
        # A key written twice: the reload is refused, says where, and nothing that runs changes.
        (cfg / "jail.local").write_text("[rl]\nbantime = 1h\nbantime = 2h\n")
        bad = _reload(resp)
        assert bad.returncode == 1
        assert f"{cfg}/jail.local:3" in bad.stderr and "nothing changed" in bad.stderr
        assert _in_set(vic, "rl_v4", "198.51.100.41"), "a failed reload dropped the ban"
        assert [b["ip"] for b in resp.ask("banned")["bans"]] == ["198.51.100.41"]
        assert resp.ask("ban", "rl", "198.51.100.42")["ok"]
        assert _in_set(vic, "rl_v4", "198.51.100.42"), "bans after a failed reload ran by no action"
        failed = resp.wait_for(lambda r: r.get("PS_EVENT") == "failed" and "reload refused" in r.get("MESSAGE", ""))
        assert failed and "jail.local:3" in failed[0]["MESSAGE"]
        # A good reload that changes the action: every ban moves to iptables, the nft objects go.
        (cfg / "jail.local").write_text("[rl]\naction = iptables[name=rl]\n")
        good = resp.ask("reload")
        assert good["ok"], good
        assert good["changes"]["changed"] == {"rl": {"from": ["nftables"], "to": ["iptables"]}}
        for ip in ("198.51.100.41", "198.51.100.42"):
            assert _ipt_rules(vic, "portsentinel-rl", ip) == 1
        assert "rl_v4" not in _nft(vic, "list", "ruleset")
        # The same action with other arguments: the bans follow (old rules out, new ones in).
        (cfg / "jail.local").write_text("[rl]\naction = iptables[name=rl2]\n")
        assert resp.ask("reload")["ok"]
        assert _ipt_rules(vic, "portsentinel-rl2", "198.51.100.41") == 1
        assert "portsentinel-rl " not in vic.run(["iptables", "-S"]).stdout + " "
        assert len(resp.ask("banned")["bans"]) == 2
        assert resp.stop() == 0


# -------------------------------------------------------------------------------------- item 2: firewall restart
def test_flushed_firewall_is_noticed_and_every_ban_reapplied(mlab: Lab, tmp_path: Path) -> None:
    vic = mlab.victim
    cfg = make_config(tmp_path, _jail(tmp_path, "fw", "nftables[name=fw]\n         iptables[name=fw]\n"
                                                      "         ipset[name=fw]\n         route")
                      + "[fwtrap]\nenabled = true\nfilter = portsentinel\n"
                        "action = kernel-trap[shape=list, tcp_ports=7, udp_ports=7, nflog_group=31]\n")
    ip, ip2 = "198.51.100.51", "198.51.100.52"
    with ResponderProcess(vic, tmp_path, cfg) as resp:
        assert resp.ask("ban", "fw", ip)["ok"] and resp.ask("ban", "fwtrap", ip2)["ok"]
        assert _in_set(vic, "fw_v4", ip) and _in_set(vic, "fwtrap_b4", ip2) and _ipt_rules(vic, "portsentinel-fw", ip)

        vic.run(["nft", "flush", "ruleset"])  # what `systemctl restart nftables` does
        back = _until(lambda: _in_set(vic, "fw_v4", ip) and _in_set(vic, "fwtrap_b4", ip2)
                      and _ipt_rules(vic, "portsentinel-fw", ip) == 1
                      and "fwtrap_trap" in _nft(vic, "list", "chains"))
        assert back is not None, resp.stderr()
        print(f"nft flush ruleset: bans back after {back:.3f}s")
        health = resp.ask("status")["health"]
        assert health["last_reapply"] is not None and "fw" in health["last_reapply_detail"]
        out = subprocess.run([tool("portsentinel"), "--socket", resp.socket, "status"], capture_output=True,
                             text=True, timeout=30).stdout
        assert "re-applied" in out

        first = health["reapplied_total"]
        vic.run(["iptables", "-F"])
        back = _until(lambda: _ipt_rules(vic, "portsentinel-fw", ip) == 1
                      and "-j portsentinel-fw" in vic.run(["iptables", "-S", "INPUT"]).stdout
                      and "match-set portsentinel-fw-4" in vic.run(["iptables", "-S", "INPUT"]).stdout)
        assert back is not None, resp.stderr()
        print(f"iptables -F: bans back after {back:.3f}s")
        assert resp.ask("status")["health"]["reapplied_total"] > first

        vic.run(["ip6tables", "-F"])
        assert _until(lambda: "match-set portsentinel-fw-6" in vic.run(["ip6tables", "-S", "INPUT"]).stdout) is not None
        vic.run(["ip", "route", "del", "blackhole", f"{ip}/32"])
        assert _until(lambda: _routes(vic, ip) == 1) is not None
        vic.run(["nft", "flush", "chain", "inet", "portsentinel", "fw"])  # the chain stays, its rules go
        assert _until(lambda: "@fw_v4" in _nft(vic, "list", "chain", "inet", "portsentinel", "fw")) is not None
        # New bans work at once, not six failures later.
        assert resp.ask("ban", "fw", "198.51.100.53")["ok"] and _in_set(vic, "fw_v4", "198.51.100.53")
        assert resp.stop() == 0


# ------------------------------------------------------------------------------ item 4: kill -9 at every step
@pytest.mark.parametrize("point", ["ban-committed", "ban-applied", "unban-committed", "unban-applied"])
def test_kill9_at_each_step_leaves_nothing_lost_doubled_or_behind(mlab: Lab, tmp_path: Path, point: str) -> None:
    vic = mlab.victim
    n = ["ban-committed", "ban-applied", "unban-committed", "unban-applied"].index(point)
    ip, name = f"198.51.100.{60 + n}", f"k{n}"
    deny = tmp_path / "hosts.deny"
    deny.write_text("# test\n")
    cfg = make_config(tmp_path, _jail(tmp_path, name, f"route\n         hosts-deny[file={deny}]\n"
                                                      f"         nftables[name={name}]\n"
                                                      f"         iptables[name={name}]",
                                        bantime="5" if point.startswith("ban") else "2"))
    alerts = _alerts(tmp_path)

    def in_force() -> bool:
        return (_routes(vic, ip) == 1 and _deny(deny, ip) == 1 and _in_set(vic, f"{name}_v4", ip)
                and _ipt_rules(vic, f"portsentinel-{name}", ip) == 1)

    def gone() -> bool:
        return (_routes(vic, ip) == 0 and _deny(deny, ip) == 0 and not _in_set(vic, f"{name}_v4", ip)
                and _ipt_rules(vic, f"portsentinel-{name}", ip) == 0)

    first = ResponderProcess(vic, tmp_path, cfg, env={"PORTSENTINEL_TEST_CRASH": point}).start()
    _record(alerts, ip)
    assert first.proc is not None
    first.proc.wait(20)  # it killed itself at the step under test
    assert first.proc.returncode == -9, first.stderr()
    first.kill9()  # already dead: closes its files
    if point.startswith("unban"):
        assert _deny(deny, ip) <= 1 and _routes(vic, ip) <= 1
    second = ResponderProcess(vic, tmp_path, cfg).start()
    try:
        if point.startswith("ban"):
            assert _until(in_force, 4) is not None, (second.stderr(), second.records())  # restored, not doubled
            assert _until(gone, 10) is not None, second.stderr()  # and lifted on time
        else:
            assert _until(gone, 10) is not None, second.stderr()  # the pending unban ran after the restart
        db = sqlite3.connect(tmp_path / "state" / "responder.sqlite3")
        assert _until(lambda: db.execute("SELECT count(*) FROM unbans").fetchone()[0] == 0, 5) is not None
        assert db.execute("SELECT count(*) FROM bans").fetchone()[0] == 0
        db.close()
        failed = [r for r in second.records() if r.get("PS_EVENT") == "failed"]
        assert not failed, failed  # idempotent: no "File exists", no missing rule
    finally:
        assert second.stop() == 0


@pytest.mark.parametrize("point", ["ban-applied", "ban-committed"])
def test_kill9_when_set_elements_go_in_force_before_their_rows(mlab: Lab, tmp_path: Path, point: str) -> None:
    """A jail of set actions only (the kernel lifts its elements by their timeout): the bans go in force before
    their rows are committed (Keeper.apply). Killed between the two, the element is there and neither the row nor
    the cursor: the next start reads the record again and bans it once; killed after, it restores it. Either way
    it is lifted on time and nothing is doubled."""
    vic = mlab.victim
    n = ["ban-applied", "ban-committed"].index(point)
    ip, name = f"100.71.0.{1 + n}", f"q{n}"  # (addresses no other test uses: the journal is shared)
    cfg = make_config(tmp_path, _jail(tmp_path, name, f"nftables[name={name}]", bantime="5"))
    alerts = _alerts(tmp_path)
    first = ResponderProcess(vic, tmp_path, cfg, env={"PORTSENTINEL_TEST_CRASH": point}).start()
    _record(alerts, ip)
    assert first.proc is not None
    first.proc.wait(20)
    assert first.proc.returncode == -9, first.stderr()
    first.kill9()
    assert _in_set(vic, f"{name}_v4", ip)  # in force before the row: the element is there in both cases
    db_path = tmp_path / "state" / "responder.sqlite3"
    db = sqlite3.connect(db_path)
    rows = db.execute("SELECT count(*) FROM bans").fetchone()[0]
    db.close()
    assert rows == (0 if point == "ban-applied" else 1)
    second = ResponderProcess(vic, tmp_path, cfg).start()
    try:
        def stored() -> bool:
            c = sqlite3.connect(db_path)
            try:
                return bool(c.execute("SELECT count(*) FROM bans WHERE ip=?", (ip,)).fetchone()[0] == 1)
            finally:
                c.close()
        assert _until(stored, 5) is not None, second.stderr()  # decided again (or restored): one row
        assert _in_set(vic, f"{name}_v4", ip)
        bans = [r for r in second.records() if r.get("PS_EVENT") == "ban" and r.get("PS_SRC") == ip]
        assert len(bans) == (1 if point == "ban-applied" else 0), bans  # the re-read record's one ban record
        assert _until(lambda: not _in_set(vic, f"{name}_v4", ip), 12) is not None, second.stderr()
        assert _until(lambda: not stored(), 5) is not None
        failed = [r for r in second.records() if r.get("PS_EVENT") == "failed"]
        assert not failed, failed
    finally:
        assert second.stop() == 0


def _all_recorded_none_failed(resp: ResponderProcess, ips: list[str], timeout: float) -> None:
    """Every one of ``ips`` has its ban record from ``resp`` (aggregated records carry many PS_SRC values) within
    ``timeout`` seconds, and nothing failed."""
    def recorded() -> set[str]:
        return {str(s) for r in resp.records() if r.get("PS_EVENT") == "ban"
                for s in (r["PS_SRC"] if isinstance(r.get("PS_SRC"), list) else [r.get("PS_SRC")])}

    assert _until(lambda: recorded() >= set(ips), timeout) is not None, len(recorded() & set(ips))
    failed = [r for r in resp.records() if r.get("PS_EVENT") == "failed"]
    assert not failed, failed[:3]


def test_kill9_while_a_large_batch_is_in_force_before_its_rows(mlab: Lab, tmp_path: Path) -> None:
    """5,000 records at once: their parts go in force while the rest is decided (Keeper.apply_early), and the
    process is killed once every part is in force, before any row: the next start decides all of them again, each
    banned once, every row written, nothing failed."""
    vic = mlab.victim
    cfg = make_config(tmp_path, _jail(tmp_path, "big", "nftables[name=big]", bantime="600"))
    alerts = _alerts(tmp_path)
    ips = [f"100.72.{i // 250}.{i % 250 + 1}" for i in range(5000)]  # (no lab's: the journal is shared)
    first = ResponderProcess(vic, tmp_path, cfg, env={"PORTSENTINEL_TEST_CRASH": "ban-applied"}).start()
    with open(alerts, "a") as fh:
        fh.write("".join(json.dumps({"MESSAGE": f"attackalert: TCP SYN/Normal scan from host: {ip}/{ip} to TCP "
                                                "port: 1", "SYSLOG_IDENTIFIER": "portsentinel-detector",
                                     "PS_EVENT": "scan", "PS_SRC": ip, "PS_PROTO": "tcp", "PS_PORT": "1"}) + "\n"
                         for ip in ips))
    assert first.proc is not None
    first.proc.wait(30)
    assert first.proc.returncode == -9, first.stderr()
    first.kill9()
    listed = _nft(vic, "list", "set", "inet", "portsentinel", "big_v4")
    assert all(f" {ip}" in listed.replace("{", " ").replace(",", " ") for ip in (ips[0], ips[2500], ips[-1]))
    db_path = tmp_path / "state" / "responder.sqlite3"

    def rows() -> int:
        db = sqlite3.connect(db_path)
        try:
            return int(db.execute("SELECT count(*) FROM bans").fetchone()[0])
        finally:
            db.close()

    assert rows() == 0  # in force, not committed
    second = ResponderProcess(vic, tmp_path, cfg).start()
    try:
        assert _until(lambda: rows() == 5000, 20) is not None, second.stderr()
        _all_recorded_none_failed(second, ips, 10)
    finally:
        assert second.stop() == 0


def test_kill9_after_a_backlog_is_in_force_before_its_rows(mlab: Lab, tmp_path: Path) -> None:
    """40,000 records waiting while the responder was stopped: read 16,384 at a time, every batch's bans in force
    before any row is written (Keeper.apply with ``more``), and the process killed then: the next start decides
    all of them again, each banned once, every row and record written, nothing failed."""
    from tests.lab.netns import LabError

    vic = mlab.victim
    cfg = make_config(tmp_path, _jail(tmp_path, "back", "nftables[name=back]", bantime="600"))
    alerts = _alerts(tmp_path)
    ips = [f"100.74.{i // 250}.{i % 250 + 1}" for i in range(40_000)]  # (no lab's: the journal is shared)
    ResponderProcess(vic, tmp_path, cfg).start().stop()  # the source's starting point committed: the file's end
    with open(alerts, "a") as fh:
        fh.write("".join(json.dumps({"MESSAGE": f"attackalert: TCP SYN/Normal scan from host: {ip}/{ip} to TCP "
                                                "port: 1", "SYSLOG_IDENTIFIER": "portsentinel-detector",
                                     "PS_EVENT": "scan", "PS_SRC": ip, "PS_PROTO": "tcp", "PS_PORT": "1"}) + "\n"
                         for ip in ips))
    first = ResponderProcess(vic, tmp_path, cfg, env={"PORTSENTINEL_TEST_CRASH": "ban-applied"})
    try:
        first.start()
    except LabError:
        pass  # killed itself before it answered
    assert first.proc is not None
    first.proc.wait(60)
    assert first.proc.returncode == -9, first.stderr()
    first.kill9()
    listed = _nft(vic, "list", "set", "inet", "portsentinel", "back_v4").replace("{", " ").replace(",", " ")
    assert all(f" {ip}" in listed for ip in (ips[0], ips[16_383], ips[16_384], ips[32_768], ips[-1]))
    db = sqlite3.connect(tmp_path / "state" / "responder.sqlite3")
    try:
        assert int(db.execute("SELECT count(*) FROM bans").fetchone()[0]) == 0  # in force, not committed
    finally:
        db.close()
    second = ResponderProcess(vic, tmp_path, cfg).start()
    try:
        def rows() -> int:
            db = sqlite3.connect(tmp_path / "state" / "responder.sqlite3")
            try:
                return int(db.execute("SELECT count(*) FROM bans").fetchone()[0])
            finally:
                db.close()

        assert _until(lambda: rows() == 40_000, 60) is not None, second.stderr()
        _all_recorded_none_failed(second, ips, 20)
    finally:
        assert second.stop() == 0


# ------------------------------------------------------------------------------------------ item 5: crash loops
def _send(src: str, **extra: str) -> None:
    """A detector record in the private journal, written by root (trusted, as the detector's)."""
    from systemd import journal

    journal.send(f"attackalert: TCP SYN/Normal scan from host: {src}/{src} to TCP port: 1",
                 SYSLOG_IDENTIFIER="portsentinel-detector", PS_EVENT="scan", PS_SRC=src, PS_PROTO="tcp",
                 **{"PS_PORT": "1", "PS_SCAN": "syn", "PS_MODE": "stcp", "PS_VERIFIED": "0", **extra})


def test_offence_past_1100_and_poison_record_never_stop_the_service(mlab: Lab, tmp_path: Path,
                                                                     journald: str) -> None:
    vic = mlab.victim
    cfg = make_config(tmp_path, _jail(tmp_path, "off", "nftables[name=off]", bantime="60",
                                      extra="bantime.increment = true\nbantime.maxtime = 1d\n"))
    ResponderProcess(vic, tmp_path, cfg, backend="systemd").start().stop()
    db = sqlite3.connect(tmp_path / "state" / "responder.sqlite3")
    with db:
        db.execute("INSERT INTO offences VALUES ('off', '198.51.100.71', 1100, 0)")
    db.close()

    def poison(resp: ResponderProcess) -> list[dict[str, str]]:
        return [r for r in resp.records() if "PS_PORT 'abc'" in r.get("MESSAGE", "")]

    with ResponderProcess(vic, tmp_path, cfg, backend="systemd") as resp:
        _send("198.51.100.70", PS_PORT="abc")  # poison: skipped, logged with itself
        _send("198.51.100.71")  # offence 1,101
        _send("198.51.100.72")
        assert resp.wait_for(lambda r: r.get("PS_EVENT") == "ban" and r.get("PS_SRC") == "198.51.100.72"), \
            resp.stderr()
        bans = {b["ip"]: b for b in resp.ask("banned")["bans"]}
        assert bans["198.51.100.71"]["count"] == 1101 and 86000 < bans["198.51.100.71"]["remaining"] <= 86400
        assert "198.51.100.70" not in bans
        assert len(poison(resp)) == 1
        assert resp.stop() == 0
    with ResponderProcess(vic, tmp_path, cfg, backend="systemd") as resp:  # no crash, the poison not re-read
        assert len(resp.ask("banned")["bans"]) == 2
        _send("198.51.100.73")
        assert resp.wait_for(lambda r: r.get("PS_EVENT") == "ban" and r.get("PS_SRC") == "198.51.100.73")
        assert len(poison(resp)) == 1
        assert resp.stop() == 0


def test_jail_named_2fast_is_refused_by_check_config_and_left_out(mlab: Lab, tmp_path: Path) -> None:
    cfg = make_config(tmp_path, _jail(tmp_path, "2fast", "nftables") + "[ok]\nenabled = true\nfilter = portsentinel\n"
                      "action = nftables[name=ok]\n[longlonglonglong]\nenabled = true\nfilter = portsentinel\n"
                      "action = iptables\n")
    out = subprocess.run([tool("portsentinel"), "check-config", "--config-dir", str(cfg)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 1
    assert "nftables.conf" in out.stderr and "jail 2fast" in out.stderr and "'2fast'" in out.stderr
    assert "jail longlonglonglong" in out.stderr and "at most 28" in out.stderr
    alerts = _alerts(tmp_path)
    with ResponderProcess(mlab.victim, tmp_path, cfg) as resp:  # the other jail runs; nothing crashes
        _record(alerts, "198.51.100.81")
        assert resp.wait_for(lambda r: r.get("PS_EVENT") == "ban" and r.get("PS_JAIL") == "ok"), resp.stderr()
        assert sorted(resp.ask("status")["jails"]) == ["ok"]
        assert resp.stop() == 0
