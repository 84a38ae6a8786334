"""The fleet's responder side in the lab (issue 13): a real responder in the victim namespace follows a fleet
JSON-lines file written here as the fleet daemon would, and its bans appear in and vanish from that namespace's nft
set `fleet`; a sharing jail's ban record in the (private) journal carries the fleet contract's fields, after a real
scan, and the fleet daemon's wake socket is nudged."""

from __future__ import annotations

import json
import os
import pwd
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from portsentinel.common.wake import WakeSocket
from tests.lab.detector import nmap, tool
from tests.lab.netns import Host, Lab
from tests.lab.pipeline import ResponderProcess, detector_for, make_config

pytestmark = pytest.mark.lab

FLEET_USER = "nobody"  # stands in for portsentinel-fleet: any user but the responder's own

FLEET_JAIL = """[DEFAULT]
backend = pyinotify
bantime.increment = false

[fleet]
enabled = true
filter = portsentinel-fleet
logpath = {path}
logowner = {user}
maxbans_per_minute = 0
bantime.fleetmultipliers = 1 2 4
bantime.maxtime = 1h
action = nftables[name=fleet]
"""


def _line(event: str, src: str, *, origin: str = "host-a", until: float | None = None, **kw: str) -> str:
    rec = {"SYSLOG_IDENTIFIER": "portsentinel-fleet", "PS_EVENT": event, "MESSAGE": f"fleet: {src} {event}",
           "PS_SRC": src.split("/")[0], "PS_ORIGIN": origin, "PS_ORIGIN_JAIL": "portsentinel",
           "PS_UNTIL": f"{time.time() + 600 if until is None else until:.3f}", "PS_SCAN": "syn",
           "PS_VERIFIED": "0", "PS_OFFENCE": "1", "PS_ORIGINS": "1", "PS_TIME": f"{time.time():.6f}"}
    if "/" in src:
        rec["PS_SRC_NET"] = src
    rec.update(kw)
    return json.dumps(rec)


def _new_file(path: Path, mode: int = 0o640) -> None:
    path.write_text("")
    nobody = pwd.getpwnam(FLEET_USER)
    os.chown(path, nobody.pw_uid, 0)
    os.chmod(path, mode)


def _append(path: Path, *lines: str) -> None:
    with path.open("a") as f:
        f.write("".join(line + "\n" for line in lines))


def _fleet_set(host: Host, fam: str) -> str:
    return host.run(["nft", "list", "set", "inet", "portsentinel", f"fleet_{fam}"]).stdout


def _until(pred: Callable[[], bool], timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return pred()


def _elements(listing: str) -> set[str]:
    return set(listing.replace("{", " ").replace("}", " ").replace(",", " ").split())


def _in_set(host: Host, elem: str) -> bool:
    """Whether ``elem`` is in the fleet jail's set: addresses in fleet_v4 / fleet_v6, networks in fleet_v4net /
    fleet_v6net."""
    return elem in _elements(_fleet_set(host, ("v6" if ":" in elem else "v4") + ("net" if "/" in elem else "")))


def _connects(host: Host, src: str, dst: str, port: int) -> bool:
    code = ("import socket,sys\ns=socket.socket(socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET)\n"
            "s.settimeout(1)\ns.bind((sys.argv[1],0))\ntry:\n s.connect((sys.argv[2],int(sys.argv[3])));"
            " print('yes')\nexcept OSError: print('no')")
    out = host.run([tool("python"), "-c", code, src, dst, str(port)], check=False, timeout=30)
    return out.stdout.strip() == "yes"


def test_the_fleet_jail_follows_the_daemons_file(mlab: Lab, tmp_path: Path, journald: str) -> None:
    (a4, a6), (b4, _), (c4, _), (d4, _) = mlab.aliases(mlab.attacker, 4)
    net6 = a6.split("::")[0] + "::/64"
    fleet_dir = tmp_path / "fleet"
    fleet_dir.mkdir()
    remote = fleet_dir / "remote.jsonl"
    _new_file(remote)
    cfg = make_config(tmp_path, FLEET_JAIL.format(path=remote, user=FLEET_USER))
    server = mlab.victim.popen([tool("python"), "-c", "import socket\ns=socket.socket()\n"
                                "s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\ns.bind(('0.0.0.0',8081))\n"
                                "s.listen(64)\nprint('ready',flush=True)\nwhile True:\n c,_=s.accept(); c.close()\n"],
                               stdout=subprocess.PIPE)
    assert server.stdout is not None and server.stdout.readline().strip() == b"ready"
    with ResponderProcess(mlab.victim, tmp_path, cfg) as resp:
        assert _connects(mlab.attacker, a4, mlab.victim.addr4, 8081)
        _append(remote, _line("ban", a4, PS_ORIGINS="2"),
                _line("ban", net6, origin="host-b", until=time.time() + 100, PS_ORIGINS="3"),
                _line("ban", mlab.victim.addr4),  # this host's own address: refused here
                "not json at all",
                _line("ban", b4, until=time.time() - 5),  # the origin's ban is over
                _line("ban", c4, origin="host a; reboot"),  # not a host name
                _line("ban", c4, PS_FLEET="1"))  # a fleet-wide line never bans
        assert _until(lambda: _in_set(mlab.victim, a4) and _in_set(mlab.victim, net6)), resp.stderr()
        v4 = _elements(_fleet_set(mlab.victim, "v4"))
        assert mlab.victim.addr4 not in v4 and b4 not in v4 and c4 not in v4
        assert not _connects(mlab.attacker, a4, mlab.victim.addr4, 8081)  # the remote ban drops its packets
        listed = subprocess.run([tool("portsentinel"), "--socket", resp.socket, "banned"], capture_output=True,
                                text=True, timeout=30).stdout
        assert any(a4 in line and "origin=host-a origins=2" in line for line in listed.splitlines()), listed
        bans = {r["PS_SRC"]: r for r in resp.wait_for(lambda r: r.get("PS_EVENT") == "ban", timeout=10)}
        assert set(bans) == {a4, a6.split("::")[0] + "::"}, bans
        assert bans[a4]["PS_ORIGIN"] == "host-a" and bans[a4]["PS_ORIGINS"] == "2"
        assert 1000 <= int(bans[a4]["PS_BANTIME"]) <= 1200  # 600 s left at the origin, 2 origins: x2
        assert bans[a4]["PS_JAIL"] == "fleet" and "PS_SHARE" not in bans[a4]
        six = bans[a6.split("::")[0] + "::"]
        assert six["PS_SRC_NET"] == net6 and six["PS_ORIGIN"] == "host-b" and 300 <= int(six["PS_BANTIME"]) <= 400
        refused = resp.wait_for(lambda r: r.get("PS_EVENT") == "ignored" and r.get("PS_SRC") == mlab.victim.addr4)
        assert refused and refused[0]["PS_ORIGIN"] == "host-a" and "never banned" in refused[0]["MESSAGE"]
        ignored = " | ".join(r["MESSAGE"] for r in resp.wait_for(lambda r: r.get("PS_EVENT") == "ignored"))
        assert "not JSON" in ignored and "PS_ORIGIN" in ignored and b4 not in ignored  # (an expired ban: counted)
        assert "can only unban" in ignored
        # journalctl PS_SRC=ADDR finds the remote ban with its origin.
        out = subprocess.run(["journalctl", "--no-pager", "-o", "json", f"PS_SRC={a4}", "PS_EVENT=ban"],
                             capture_output=True, text=True, timeout=30).stdout
        assert any(json.loads(x).get("PS_ORIGIN") == "host-a" for x in out.splitlines())

        # The origin's unban lifts the fleet jail's ban; a fleet-wide unban lifts the network.
        _append(remote, _line("unban", a4), _line("unban", net6, origin="host-c", PS_ORIGIN_JAIL="_unban"))
        assert _until(lambda: not _in_set(mlab.victim, a4) and not _in_set(mlab.victim, net6)), resp.stderr()
        assert _connects(mlab.attacker, a4, mlab.victim.addr4, 8081)
        unbans = resp.wait_for(lambda r: r.get("PS_EVENT") == "unban", timeout=10)
        by_src = {r["PS_SRC"]: r for r in unbans}  # each names the ban's origin; the detail who lifted it
        assert by_src[a4]["PS_ORIGIN"] == "host-a" and "unbanned by host-a" in by_src[a4]["PS_DETAIL"]
        six_unban = by_src[a6.split("::")[0] + "::"]
        assert six_unban["PS_ORIGIN"] == "host-b" and six_unban["PS_DETAIL"] == "fleet-wide unban from host-c"

        # Rotation (rename + a new file), as the daemon rotates by size.
        remote.rename(fleet_dir / "remote.jsonl.1")
        _new_file(remote)
        _append(remote, _line("ban", b4))
        assert _until(lambda: _in_set(mlab.victim, b4)), resp.stderr()

        # A file anyone may write is not the daemon's: nothing in it counts, until it is fixed.
        os.chmod(remote, 0o666)
        _append(remote, _line("ban", c4))
        assert resp.wait_for(lambda r: r.get("PS_SRC") == c4 and "forged" in r.get("MESSAGE", ""), timeout=20)
        os.chmod(remote, 0o640)
        _append(remote, _line("ban", d4))
        assert _until(lambda: _in_set(mlab.victim, d4)), resp.stderr()
        assert not _in_set(mlab.victim, c4)
        assert resp.stop() == 0
    server.kill()
    server.wait(10)


def _wakes(sock: socket.socket, timeout: float) -> int:
    sock.settimeout(timeout)
    n = 0
    try:
        while True:
            sock.recv(16)
            n += 1
            sock.settimeout(0.2)
    except (TimeoutError, BlockingIOError):
        return n


def test_a_sharing_jails_records_carry_the_contracts_fields(mlab: Lab, tmp_path: Path, journald: str) -> None:
    ((src4, _),) = mlab.aliases(mlab.attacker, 1)
    cfg = make_config(tmp_path, "[DEFAULT]\nbantime = 10m\nbantime.increment = false\n"
                                "[portsentinel]\nenabled = true\nfilter = portsentinel\nshare = true\n"
                                "action = nftables[name=shared]\n")
    wake = WakeSocket(str(tmp_path / "fleet.wake"))
    try:
        resp = ResponderProcess(mlab.victim, tmp_path, cfg, backend="systemd")
        resp.argv += ["--fleet-wake", str(tmp_path / "fleet.wake")]
        with detector_for(mlab.victim, tmp_path, "stcp", output="journal"), resp:
            _wakes(wake.sock, 0.5)  # (none expected; drained to start from nothing)
            nmap(mlab.attacker, "-sS", mlab.victim.addr4, "1,11", source=src4)
            bans = resp.wait_for(lambda r: r.get("PS_EVENT") == "ban" and r.get("PS_SRC") == src4, timeout=30)
            assert bans, resp.stderr()
            ban = bans[0]
            assert ban["PS_SHARE"] == "1" and ban["PS_JAIL"] == "portsentinel" and ban["PS_OFFENCE"] == "1"
            assert (ban["PS_SCAN"], ban["PS_MODE"], ban["PS_VERIFIED"]) == ("syn", "stcp", "0")
            assert abs(float(ban["PS_UNTIL"]) - float(ban["PS_TIME"]) - 600) < 30  # PS_TIME: after the actions ran
            assert _wakes(wake.sock, 5.0) >= 1  # the fleet daemon is told at once
            assert src4 in _elements(_fleet_set_named(mlab.victim, "shared_v4"))
            answer = resp.ask("unban", "--fleet", src4)
            assert answer.get("ok") and answer["unbanned"] == [{"jail": "portsentinel", "ip": src4}], answer
            marker = resp.wait_for(lambda r: r.get("PS_FLEET") == "1" and r.get("PS_SRC") == src4, timeout=10)
            assert marker and marker[0]["PS_EVENT"] == "unban" and marker[0]["PS_SHARE"] == "1"
            unban = resp.wait_for(lambda r: r.get("PS_EVENT") == "unban" and r.get("PS_JAIL") == "portsentinel")
            assert unban and unban[0]["PS_SHARE"] == "1" and unban[0]["PS_UNTIL"] == ban["PS_UNTIL"]
            assert _wakes(wake.sock, 5.0) >= 1
            assert src4 not in _elements(_fleet_set_named(mlab.victim, "shared_v4"))
            assert resp.stop() == 0
    finally:
        wake.close()


def _fleet_set_named(host: Host, name: str) -> str:
    return host.run(["nft", "list", "set", "inet", "portsentinel", name]).stdout
