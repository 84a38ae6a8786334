"""Each shipped action for real, inside a network namespace this test creates and deletes.

Nothing here touches the host's firewall, routes or /etc/hosts.deny: every command runs under
``ip netns exec NS`` (the runner's prefix), files live in tmp_path, SMTP is on the namespace's loopback.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from portsentinel.responder.actions.action import Action, Steps, load_action
from portsentinel.responder.actions.variables import BanVars
from portsentinel.responder.adapters.nftbatch import NftBatch
from portsentinel.responder.adapters.runner import SubprocessRunner
from tests.unit.responder.actions.plans import argv, set_name

pytestmark = pytest.mark.lab
ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "actions.d"
V4, V6 = "198.51.100.7", "2001:db8:5::7"


@pytest.fixture
def ns() -> Iterator[str]:
    if os.geteuid() != 0:
        pytest.fail("lab tests need root")
    name = f"psact-{os.getpid()}-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", name], check=True, timeout=10)
    try:
        subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"], check=True, timeout=10)
        yield name
    finally:
        for pid in subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True).stdout.split():
            try:
                os.kill(int(pid), 9)
            except ProcessLookupError:
                pass
        subprocess.run(["ip", "netns", "del", name], timeout=10)


def sh(ns: str, *argv: str) -> str:
    return subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True, check=True,
                          timeout=30).stdout


def run_phase(runner: SubprocessRunner, action: Action, phase: str, ban: dict[str, object] | None = None) -> None:
    plan = action.plan(phase, None if ban is None else BanVars.parse(ban), batch=False)
    assert isinstance(plan, Steps)
    for step in plan.steps:
        res = runner.run(step.argv)
        assert res.ok or not step.check, f"{step.where}: {step.argv}: {res.status} {res.stderr}"


def test_nftables_set_with_timeouts_and_batch(ns: str) -> None:
    runner = SubprocessRunner(["ip", "netns", "exec", ns])
    a = load_action(SHIPPED, "nftables[name=ps]", "ps")
    run_phase(runner, a, "actionstart")
    run_phase(runner, a, "actionstart")  # idempotent: still one rule per family
    assert sh(ns, "nft", "list", "chain", "inet", "portsentinel", "ps").count("saddr @ps_v") == 4  # one per set
    run_phase(runner, a, "actionban", {"ip": V4, "bantime": 600})
    run_phase(runner, a, "actionban", {"ip": V6, "bantime": -1})
    s4 = sh(ns, "nft", "list", "set", "inet", "portsentinel", "ps_v4")
    assert re.search(r"flags [a-z,]*timeout", s4) and f"{V4} timeout 10m" in s4
    s6 = sh(ns, "nft", "list", "set", "inet", "portsentinel", "ps_v6")
    assert V6 in s6 and "timeout" not in s6.split("elements")[1]
    run_phase(runner, a, "actionunban", {"ip": V4})
    run_phase(runner, a, "actionunban", {"ip": V4})  # already gone: still succeeds
    assert V4 not in sh(ns, "nft", "list", "set", "inet", "portsentinel", "ps_v4")

    batch = NftBatch(runner)
    for i in range(1, 201):
        ip = f"10.9.{i // 250}.{i % 250}"
        batch.add(set_name(a, {"ip": ip}) or "", ip, 300)
    batch.add("ps_v4", "10.9.0.1", 900)
    res = batch.commit()
    assert res.ok and res.runs == 1 and res.applied == 200
    listed = sh(ns, "nft", "list", "set", "inet", "portsentinel", "ps_v4")
    assert "10.9.0.1 timeout 15m" in listed and "10.9.0.200 timeout 5m" in listed
    batch.delete("ps_v4", "10.9.0.2")
    batch.delete("ps_v4", "10.9.0.250")  # never added
    assert batch.commit().ok
    listed = sh(ns, "nft", "list", "set", "inet", "portsentinel", "ps_v4")
    assert "10.9.0.2 " not in listed and "10.9.0.3 " in listed
    run_phase(runner, a, "actionstop")
    assert "ps_v4" not in sh(ns, "nft", "list", "ruleset")


def test_nftables_networks_in_interval_sets_and_the_old_layout_replaced(ns: str) -> None:
    """A network ban lands in <name>_v6net (flags interval), an address in the hash set <name>_v6; an address
    set of the layout before (flags interval,timeout, with the chain's rule on it, as a responder killed before the
    upgrade leaves it) is replaced by actionstart, and a second actionstart keeps the hash set and its elements."""
    runner = SubprocessRunner(["ip", "netns", "exec", ns])
    sh(ns, "nft", "add table inet portsentinel; add set inet portsentinel ps_v4 { type ipv4_addr; "
                  "flags interval,timeout; }; add element inet portsentinel ps_v4 { 192.168.0.0/16, 10.1.1.1 }; "
                  "add chain inet portsentinel ps { type filter hook input priority -1; policy accept; }; "
                  "add rule inet portsentinel ps ip saddr @ps_v4 drop")
    a = load_action(SHIPPED, "nftables[name=ps]", "ps")
    run_phase(runner, a, "actionstart")
    s4 = sh(ns, "nft", "list", "set", "inet", "portsentinel", "ps_v4")
    assert "interval" not in s4 and "flags timeout" in s4 and "10.1.1.1" not in s4
    run_phase(runner, a, "actionban", {"ip": "2001:db8:9::/64", "bantime": 600})
    run_phase(runner, a, "actionban", {"ip": V6, "bantime": 600})
    run_phase(runner, a, "actionban", {"ip": V4, "bantime": 600})
    run_phase(runner, a, "actionstart")  # idempotent: the hash sets and their elements stay
    net6 = sh(ns, "nft", "list", "set", "inet", "portsentinel", "ps_v6net")
    assert "flags interval,timeout" in net6 and "2001:db8:9::/64" in net6 and V6 not in net6
    s6 = sh(ns, "nft", "list", "set", "inet", "portsentinel", "ps_v6")
    assert "interval" not in s6 and V6 in s6 and "/64" not in s6
    assert V4 in sh(ns, "nft", "list", "set", "inet", "portsentinel", "ps_v4")
    run_phase(runner, a, "actionunban", {"ip": "2001:db8:9::/64"})
    assert "2001:db8:9::" not in sh(ns, "nft", "list", "set", "inet", "portsentinel", "ps_v6net")
    run_phase(runner, a, "actioncheck")
    step = a.plan("actioncheck").steps[0]  # type: ignore[union-attr]
    check = [step.argv[0].lstrip("@"), *step.argv[1:]]  # run as the internal command's module does
    sh(ns, "nft", "delete rule inet portsentinel ps handle " + sh(ns, "nft", "-a", "list", "chain", "inet",
       "portsentinel", "ps").split("@ps_v6net")[1].split("handle ")[1].split()[0])
    gone = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-m", "portsentinel.responder.adapters.internal",
                           *check], capture_output=True, text=True, timeout=60)
    assert gone.returncode == 1 and "ps_v6net" in gone.stderr, gone.stderr  # a rule's set gone: the check fails
    sh(ns, "nft", "flush", "chain", "inet", "portsentinel", "ps")
    flushed = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-m",
                              "portsentinel.responder.adapters.internal", *check], capture_output=True, text=True,
                             timeout=60)
    assert flushed.returncode == 1 and "ps_v4" in flushed.stderr
    run_phase(runner, a, "actionstart")
    run_phase(runner, a, "actioncheck")
    run_phase(runner, a, "actionstop")
    assert "ps_v" not in sh(ns, "nft", "list", "ruleset")
    missing = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-m",
                              "portsentinel.responder.adapters.internal", *check], capture_output=True, text=True,
                             timeout=60)
    assert missing.returncode == 1 and "No such file" in missing.stderr, missing.stderr


def test_nftables_batch_falls_back_per_element(ns: str) -> None:
    runner = SubprocessRunner(["ip", "netns", "exec", ns])
    run_phase(runner, load_action(SHIPPED, "nftables[name=fb]", "fb"), "actionstart")
    batch = NftBatch(runner)
    batch.add("fb_v4", "10.1.1.1", 60)
    batch.add("fb_v4", "2001:db8::1", 60)  # wrong family for the set: the batch fails, the v4 one still lands
    res = batch.commit()
    assert not res.batched and res.applied == 1 and res.failed[0][0] == "2001:db8::1"
    assert "10.1.1.1" in sh(ns, "nft", "list", "set", "inet", "portsentinel", "fb_v4")


@pytest.mark.parametrize("tool,ip", [("iptables", V4), ("ip6tables", V6)])
def test_iptables_rule(ns: str, tool: str, ip: str) -> None:
    runner = SubprocessRunner(["ip", "netns", "exec", ns])
    a = load_action(SHIPPED, f"{tool}[name=ssh, blocktype=REJECT]", "ssh")
    run_phase(runner, a, "actionstart")
    run_phase(runner, a, "actionstart")
    rules = sh(ns, tool, "-S")
    assert rules.count("-A INPUT -j portsentinel-ssh") == 1
    run_phase(runner, a, "actionban", {"ip": ip, "bantime": 60})
    run_phase(runner, a, "actionban", {"ip": V4 if ip == V6 else V6, "bantime": 60})  # other family: nothing
    rules = sh(ns, tool, "-S", "portsentinel-ssh")
    prefix = "/32" if ip == V4 else "/128"
    assert f"-A portsentinel-ssh -s {ip}{prefix} -j REJECT" in rules and rules.count("-s ") == 1
    run_phase(runner, a, "actioncheck")
    run_phase(runner, a, "actionunban", {"ip": ip})
    assert "-s " not in sh(ns, tool, "-S", "portsentinel-ssh")
    run_phase(runner, a, "actionstop")
    assert "portsentinel" not in sh(ns, tool, "-S")


def test_ipset_membership(ns: str) -> None:
    runner = SubprocessRunner(["ip", "netns", "exec", ns])
    a = load_action(SHIPPED, "ipset[name=scan]", "scan")
    run_phase(runner, a, "actionstart")
    run_phase(runner, a, "actionban", {"ip": V4, "bantime": 120})
    run_phase(runner, a, "actionban", {"ip": V6, "bantime": 120})
    out4 = sh(ns, "ipset", "list", "portsentinel-scan-4")
    assert f"{V4} timeout" in out4
    assert V6 in sh(ns, "ipset", "list", "portsentinel-scan-6")
    assert "--match-set portsentinel-scan-4 src -j DROP" in sh(ns, "iptables", "-S", "INPUT")
    assert "--match-set portsentinel-scan-6 src -j DROP" in sh(ns, "ip6tables", "-S", "INPUT")
    run_phase(runner, a, "actionunban", {"ip": V4})
    assert V4 not in sh(ns, "ipset", "list", "portsentinel-scan-4")
    run_phase(runner, a, "actionstop")
    assert "portsentinel" not in sh(ns, "ipset", "list", "-n")


def test_route_blackhole_and_gateway(ns: str) -> None:
    runner = SubprocessRunner(["ip", "netns", "exec", ns])
    a = load_action(SHIPPED, "route", "ssh")
    run_phase(runner, a, "actionban", {"ip": V4})
    run_phase(runner, a, "actionban", {"ip": V6})
    assert f"blackhole {V4}" in sh(ns, "ip", "route", "show", "type", "blackhole")
    assert f"blackhole {V6}" in sh(ns, "ip", "-6", "route", "show", "type", "blackhole")
    run_phase(runner, a, "actionunban", {"ip": V4})
    run_phase(runner, a, "actionunban", {"ip": V6})
    assert V4 not in sh(ns, "ip", "route", "show", "type", "blackhole")
    assert V6 not in sh(ns, "ip", "-6", "route", "show", "type", "blackhole")
    sh(ns, "ip", "link", "add", "gw0", "type", "veth", "peer", "name", "gw1")  # both ends in this namespace
    sh(ns, "ip", "addr", "add", "192.0.2.2/24", "dev", "gw0")
    sh(ns, "ip", "link", "set", "gw0", "up")
    sh(ns, "ip", "link", "set", "gw1", "up")
    g = load_action(SHIPPED, "route[gateway=192.0.2.1]", "ssh")
    run_phase(runner, g, "actionban", {"ip": V4})
    assert f"{V4} via 192.0.2.1" in sh(ns, "ip", "route")
    run_phase(runner, g, "actionunban", {"ip": V4})
    assert V4 not in sh(ns, "ip", "route")


@pytest.mark.parametrize("prefixed", [False, True], ids=["in-process", "python-m"])
def test_hosts_deny_file(ns: str, tmp_path: Path, prefixed: bool) -> None:
    runner = SubprocessRunner(["ip", "netns", "exec", ns] if prefixed else [])
    deny = tmp_path / "hosts.deny"
    deny.write_text("# keep me\nsshd: 192.0.2.9\n")
    deny.chmod(0o640)
    a = load_action(SHIPPED, f"hosts-deny[file={deny}]", "ps")
    for _ in range(2):  # idempotent
        run_phase(runner, a, "actionban", {"ip": V4})
        run_phase(runner, a, "actionban", {"ip": V6})
    mark = "# portsentinel-responder ban"
    assert deny.read_text() == f"# keep me\nsshd: 192.0.2.9\n{mark}\nALL: {V4}\n{mark}\nALL: [{V6}]\n"
    assert deny.stat().st_mode & 0o777 == 0o640
    run_phase(runner, a, "actionunban", {"ip": V4})
    run_phase(runner, a, "actionunban", {"ip": V4})
    assert deny.read_text() == f"# keep me\nsshd: 192.0.2.9\n{mark}\nALL: [{V6}]\n"
    assert [p.name for p in tmp_path.iterdir()] == ["hosts.deny"]  # no temporary left behind


SMTP_SERVER = """
import sys, time
from aiosmtpd.controller import Controller
class H:
    async def handle_DATA(self, server, session, envelope):
        with open(sys.argv[2], "ab") as fh:
            fh.write(envelope.content + b"\\n=====\\n")
        return "250 OK"
c = Controller(H(), hostname="127.0.0.1", port=int(sys.argv[1]))
c.start()
open(sys.argv[3], "w").write("up")
time.sleep(60)
"""


def test_mail_to_smtp_server_in_namespace(ns: str, tmp_path: Path) -> None:
    server = tmp_path / "smtpd.py"
    server.write_text(SMTP_SERVER)
    box, ready = tmp_path / "mbox", tmp_path / "ready"
    proc = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, str(server), "2525", str(box), str(ready)])
    try:
        deadline = time.monotonic() + 10
        while not ready.exists():
            assert time.monotonic() < deadline and proc.poll() is None, "SMTP server did not start"
            time.sleep(0.05)
        runner = SubprocessRunner(["ip", "netns", "exec", ns])
        a = load_action(SHIPPED, "mail[mailport=2525, mailhost=127.0.0.1, dest=admin@example.org]", "scan")
        hostile = "probe\r\nBcc: victim@example.org\r\n\r\n.\r\nMAIL FROM:<x>\x1b[31m"
        run_phase(runner, a, "actionban", {"ip": V4, "bantime": 3600, "port": 143, "scan": "syn",
                                           "proto": "tcp", "failures": 1, "time": 1_700_000_000,
                                           "matches": hostile})
        text = box.read_bytes().decode()
        assert "Subject: [portsentinel] scan: banned 198.51.100.7" in text
        assert "To: admin@example.org" in text and "port: 143" in text
        head, _, body = text.partition("\r\n\r\n" if "\r\n\r\n" in text else "\n\n")
        assert "Bcc" not in head and "\x1b" not in text
        # Outside this namespace nothing listens: the same action from the root namespace fails.
    finally:
        proc.kill()
        proc.wait(timeout=10)


def _script(tmp_path: Path, mode: int = 0o755) -> tuple[Path, Path]:
    out = tmp_path / "args.txt"
    script = tmp_path / "hook.sh"
    script.write_text(f'#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done >> {out}\n')
    script.chmod(mode)
    return script, out


def test_script_receives_arguments(ns: str, tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    script, out = _script(tmp_path)
    runner = SubprocessRunner(["ip", "netns", "exec", ns])
    a = load_action(SHIPPED, f'script[command="{script} $TARGET$ $PORT$ $MODE$ fixed", first=yes]', "ps")
    assert a.order < 0
    run_phase(runner, a, "actionban", {"ip": V4, "port": 143, "mode": "stcp"})
    assert out.read_text() == f"{V4}\n143\nstcp\nfixed\n"


def test_script_writable_by_others_is_refused(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    script, out = _script(tmp_path, 0o777)
    a = load_action(SHIPPED, f"script[command={script} $TARGET$]", "ps")
    res = SubprocessRunner().run(argv(a, "actionban", {"ip": V4})[0])
    assert res.status == 2 and "world-writable" in res.stderr and not out.exists()
    script.chmod(0o755)
    os.chown(script, 65534, 65534)
    res = SubprocessRunner().run(argv(a, "actionban", {"ip": V4})[0])
    assert res.status == 2 and "not root" in res.stderr and not out.exists()
