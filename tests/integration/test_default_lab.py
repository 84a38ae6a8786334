"""Out of the box, a fast scanner learns nothing (issue 9 §4), in the lab.

The configuration is the one `portsentinel run` uses (the detector's embedded defaults; the project's jail.conf,
filter.d and actions.d), and the Debian package's (detector.conf; jail.conf plus jail.d/00-debian.conf). Only
paths differ: the detector's JSON-lines file and wake socket, the responder's state, control socket and logpath
(jail.local) live in the test's directory. The Debian layer names the package's system user _portsentinel, which
the lab machine does not have: the test puts root in its place, the detector's user here.

A real service listens on port 80 in the victim throughout. Answers are counted on the victim's side: every SYN-ACK
and RST it sends (tests/lab/counting.py). nmap runs with ``--max-retries 1 --min-rate 2000`` so that a scan
whose probes are dropped ends in seconds; it sends its probes in the same order either way.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.test_prefix_lab import add_addresses, own_networks, rotate
from tests.lab.counting import answers, install_counters, tcp_answers
from tests.lab.detector import DetectorProcess, tool
from tests.lab.netns import Lab
from tests.lab.nftset import set_elements
from tests.lab.pipeline import ResponderProcess, can_connect

pytestmark = pytest.mark.lab

ROOT = Path(__file__).resolve().parents[2]
SERVICE = ("import socket\ns=socket.socket(socket.AF_INET6)\ns.setsockopt(socket.IPPROTO_IPV6,socket.IPV6_V6ONLY,0)\n"
           "s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\ns.bind(('::',80))\ns.listen(256)\n"
           "print('ready',flush=True)\nwhile True:\n c,_=s.accept(); c.sendall(b'hello\\n'); c.close()\n")
FAST = [["-sS", "-p1-1024", "-T5"], ["-sS", "--top-ports", "1000", "-T5"]]


def config_dir(base: Path, flavour: str) -> Path:
    """The shipped responder configuration (flavour "run": the project's; "debian": plus jail.d/00-debian.conf),
    and a jail.local that moves the detector's JSON-lines file into the test's directory."""
    cfg = base / "etc"
    cfg.mkdir()
    shutil.copy(ROOT / "jail.conf", cfg / "jail.conf")
    shutil.copytree(ROOT / "filter.d", cfg / "filter.d")
    shutil.copytree(ROOT / "actions.d", cfg / "actions.d")
    if flavour == "debian":
        (cfg / "jail.d").mkdir()
        text = (ROOT / "packaging" / "debian" / "conf" / "00-debian.conf").read_text()
        (cfg / "jail.d" / "00-debian.conf").write_text(text.replace("_portsentinel", "root"))
    (cfg / "jail.local").write_text(f"[DEFAULT]\nlogpath = {base}/alerts.jsonl\n")
    return cfg


@pytest.fixture(scope="module", params=["run", "debian"])
def shipped(request: pytest.FixtureRequest, mlab: Lab,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Lab, ResponderProcess, str]]:
    flavour = str(request.param)
    base = tmp_path_factory.mktemp(f"default-{flavour}")
    base.chmod(0o755)
    cfg = config_dir(base, flavour)
    check = subprocess.run([tool("portsentinel"), "check-config", "--config-dir", str(cfg)], capture_output=True,
                           text=True, timeout=60)
    assert check.returncode == 0 and "kernel trap portsentinel" in check.stdout, check.stdout + check.stderr
    if not getattr(mlab, "_default_ready", False):
        install_counters(mlab.victim)
        own_networks(mlab, "2001:db8:beef::/48")
        srv = mlab.victim.popen([tool("python"), "-c", SERVICE], stdout=subprocess.PIPE)
        assert srv.stdout is not None and srv.stdout.readline().strip() == b"ready"
        mlab._default_ready = True  # type: ignore[attr-defined]
    det_conf = ["--config", str(ROOT / "detector.conf")] if flavour == "debian" else []
    det = DetectorProcess(mlab.victim, base / "alerts.jsonl", output="jsonl",
                          extra=["--wake", str(base / "wake.sock"), *det_conf])
    with det, ResponderProcess(mlab.victim, base, cfg) as resp:
        yield mlab, resp, flavour
        assert resp.stop() == 0


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_fast_scans_get_at_most_10_answers(shipped: tuple[Lab, ResponderProcess, str], family: str) -> None:
    lab, resp, flavour = shipped
    target = lab.victim.addr4 if family == "ipv4" else lab.victim.addr6
    got = []
    for args in FAST:
        a4, a6 = lab.aliases(lab.attacker, 1)[0]
        src = a4 if family == "ipv4" else a6
        answers(lab.victim, reset=True)
        argv = ["timeout", "100", "nmap", "-n", "-Pn", "--max-retries", "1", "--min-rate", "2000", *args, "-S", src,
                "-e", lab.attacker.iface, *(["-6"] if family == "ipv6" else []), target]
        proc = lab.attacker.run(argv, check=False, timeout=110)
        assert proc.returncode == 0, proc.stderr
        got.append((" ".join(args), tcp_answers(lab.victim)))
    print(f"{flavour} {family}: answered {got}")
    assert all(n <= 10 for _, n in got), got


def test_client_of_a_real_service_is_never_affected(shipped: tuple[Lab, ResponderProcess, str]) -> None:
    lab, resp, _ = shipped
    (c4, c6), (s4, _) = lab.aliases(lab.attacker, 2)
    for _ in range(3):
        assert can_connect(lab.attacker, lab.victim.addr4, 80)  # the attacker's main address
    # A scan from another address of the same host, then the client again, from both families.
    lab.attacker.run(["timeout", "60", "nmap", "-n", "-Pn", "--max-retries", "1", "--min-rate", "2000", "-sS",
                      "-p1-200", "-T5", "-S", s4, "-e", lab.attacker.iface, lab.victim.addr4], timeout=70)
    code = ("import socket,sys\nfor fam,src,dst in ((socket.AF_INET,sys.argv[1],sys.argv[3]),"
            "(socket.AF_INET6,sys.argv[2],sys.argv[4])):\n"
            " for i in range(5):\n  s=socket.socket(fam); s.settimeout(2); s.bind((src,0))\n"
            "  try: s.connect((dst,80)); assert s.recv(16)==b'hello\\n'\n"
            "  except OSError as e: sys.exit(f'{src} -> {dst} #{i}: {e}')\n"
            "  s.close()\nprint('ok')\n")
    out = lab.attacker.run([tool("python"), "-c", code, c4, c6, lab.victim.addr4, lab.victim.addr6], check=False,
                           timeout=60)
    assert out.stdout.strip() == "ok", (out.stderr, lab.victim.run(["nft", "list", "ruleset"]).stdout)
    banned = {b["ip"] for b in resp.ask("banned")["bans"]}
    assert not banned & {lab.attacker.addr4, c4, c6}, banned
    assert s4 in banned


def test_rotating_ipv6_scanner_against_the_default(shipped: tuple[Lab, ResponderProcess, str]) -> None:
    lab, resp, flavour = shipped
    net = "2001:db8:beef:1" if flavour == "run" else "2001:db8:beef:2"
    sources = [f"{net}::{0x100 + i:x}" for i in range(91)]
    add_addresses(lab.attacker, sources)
    answers(lab.victim, reset=True)
    rotate(lab, sources)
    assert tcp_answers(lab.victim) <= 10
    mine = resp.wait_for(lambda r: r.get("PS_EVENT") == "ban" and r.get("PS_SRC_NET") == f"{net}::/64"
                         and r.get("PS_ACTION") != "kernel-trap", timeout=5)
    assert len(mine) == 1, mine
    trapped = [r for r in resp.records() if r.get("PS_ACTION") == "kernel-trap" and r.get("PS_SRC") in sources]
    assert len(trapped) == 1, trapped  # the tarpit held the /64 after its first trap probe
    assert f"{net}::" in set_elements(lab.victim, "portsentinel_t6")
    # Any address of the /64 lifts the network's ban and its tarpit element.
    lifted = {(b["jail"], b["ip"]) for b in resp.ask("unban", sources[-1])["unbanned"]}
    assert ("portsentinel", f"{net}::/64") in lifted, lifted
    assert f"{net}::" not in set_elements(lab.victim, "portsentinel_t6")
    assert f"{net}::/64" not in set_elements(lab.victim, "portsentinel_v6net", only=True)
