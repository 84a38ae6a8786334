"""Addresses, default routes and resolvers that appear after the responder started are never banned (issue 10
item 3): rtnetlink events and resolver-file watches, against a real responder in the victim namespace.

The resolver part lays a tmpfs over /run/systemd/resolve inside the test session's own mount namespace
(scripts/test.sh runs every test in one), so systemd-resolved's upstream list can be written without touching
the host's.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.lab.netns import Lab
from tests.lab.pipeline import ResponderProcess, make_config

pytestmark = pytest.mark.lab

RESOLVED = Path("/run/systemd/resolve")


def _scan(src: str) -> str:
    return json.dumps({"MESSAGE": f"attackalert: TCP SYN/Normal scan from host: {src}/{src} to TCP port: 1",
                       "SYSLOG_IDENTIFIER": "portsentinel-detector", "PS_EVENT": "scan", "PS_SRC": src,
                       "PS_PROTO": "tcp", "PS_PORT": "1", "PS_SCAN": "syn", "PS_MODE": "stcp", "PS_VERIFIED": "0"})


@pytest.fixture
def resolved_dir() -> Iterator[Path]:
    """A private /run/systemd/resolve (tmpfs), only inside the test session's own mount namespace."""
    mounts = Path("/proc/self/mountinfo").read_text().split("\n")
    private = any(" /run/systemd/journal " in m and " - tmpfs " in m for m in mounts)
    if os.environ.get("PORTSENTINEL_PRIVATE_JOURNALD") != "1" or not private:
        pytest.fail("run under scripts/test.sh: the resolver test needs the session's private mount namespace")
    created = not RESOLVED.exists()
    RESOLVED.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755,size=1m", "tmpfs", str(RESOLVED)], check=True)
    try:
        yield RESOLVED
    finally:
        subprocess.run(["umount", str(RESOLVED)], check=True)
        if created:
            RESOLVED.rmdir()


def test_addresses_routes_and_resolvers_added_after_start_are_never_banned(
        mlab: Lab, tmp_path: Path, resolved_dir: Path) -> None:
    victim, attacker = mlab.victim, mlab.attacker
    alerts = tmp_path / "alerts.jsonl"
    alerts.touch(mode=0o640)
    cfg = make_config(tmp_path, f"[DEFAULT]\nlogpath = {alerts}\nbantime = 60\nbantime.increment = false\n"
                                "[portsentinel]\nenabled = true\nfilter = portsentinel\n"
                                "action = nftables[name=host]\n")
    gw4, gw6 = mlab.aliases(attacker, 1)[0]
    own4, own6, resolver, control = "10.77.0.5", "2001:db8:77::5", "198.51.100.53", "198.51.100.54"
    routes = [["ip", "route", "add", "default", "via", gw4, "dev", victim.iface],
              ["ip", "-6", "route", "add", "default", "via", gw6, "dev", victim.iface]]
    with ResponderProcess(victim, tmp_path, cfg) as resp:
        try:
            # Each change, then at once a record naming it as the scanner: the kernel's event (or inotify's)
            # is queued before the change returns, and the responder reads it before the record.
            victim.run(["ip", "addr", "add", f"{own4}/32", "dev", victim.iface])
            victim.run(["ip", "-6", "addr", "add", f"{own6}/128", "dev", victim.iface, "nodad"])
            for cmd in routes:
                victim.run(cmd)
            (resolved_dir / "resolv.conf.tmp").write_text(f"# upstream servers\nnameserver {resolver}\n")
            (resolved_dir / "resolv.conf.tmp").rename(resolved_dir / "resolv.conf")
            with open(alerts, "a") as fh:
                fh.write("".join(_scan(a) + "\n" for a in (own4, own6, gw4, gw6, resolver, control)))
            assert resp.wait_for(lambda r: r.get("PS_EVENT") == "ban" and r.get("PS_SRC") == control), \
                resp.stderr()
            time.sleep(0.3)
            reasons = {r["PS_SRC"]: r["MESSAGE"] for r in resp.records()
                       if r.get("PS_EVENT") == "ignored" and "PS_SRC" in r}
            assert "own address" in reasons.get(own4, "") and "own address" in reasons.get(own6, ""), reasons
            assert "default gateway" in reasons.get(gw4, "") and "default gateway" in reasons.get(gw6, ""), reasons
            assert "resolver" in reasons.get(resolver, ""), reasons
            assert [b["ip"] for b in resp.ask("banned")["bans"]] == [control]
            status = resp.ask("status")
            assert status["never_ban"].get(resolver) == "resolver" and status["facts_updated"] > 0
            nft = victim.run(["nft", "list", "table", "inet", "portsentinel"]).stdout
            assert control in nft and not any(a in nft for a in (own4, gw4, resolver))
            # A removed address is followed too: banned again once it is no longer the host's.
            victim.run(["ip", "addr", "del", f"{own4}/32", "dev", victim.iface])
            with open(alerts, "a") as fh:
                fh.write(_scan(own4) + "\n")
            assert resp.wait_for(lambda r: r.get("PS_EVENT") == "ban" and r.get("PS_SRC") == own4), resp.stderr()
        finally:
            for cmd in routes:
                victim.run(["del" if c == "add" else c for c in cmd], check=False)
        assert resp.stop() == 0
