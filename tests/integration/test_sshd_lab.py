"""A real OpenSSH server in the victim namespace, attacked from the attacker namespace, banned by the shipped
sshd jail (issue 11): its log goes to the private journald (``systemd-cat -t sshd``: the records carry sshd's
own trusted _UID=0, _COMM=sshd and each connection's _PID) or, as rsyslog would write it, to an auth.log file.

No real account is used: the attacker logs in as a user that does not exist, with a wrong password, to a
server that allows only a user that does not exist either (AllowUsers) and never root.
- normal mode: two failed logins ban; ``nmap -sV -p22`` from another address does not;
- aggressive mode: ``nmap -sV -p22`` twice bans (a kex_exchange_identification session, then its close).
"""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path
from typing import IO

import pytest

from tests.lab.detector import ROOT
from tests.lab.netns import Host, Lab, LabError
from tests.lab.pipeline import ResponderProcess, make_config

pytestmark = pytest.mark.lab

SSHD = "/usr/sbin/sshd"
NO_SUCH_USER = "portsentinel-nosuchuser"


@pytest.fixture(scope="module")
def hostkey(tmp_path_factory: pytest.TempPathFactory) -> Path:
    for tool in (SSHD, "/usr/bin/sshpass", "/usr/bin/systemd-cat"):
        if not Path(tool).exists():
            pytest.fail(f"{tool} missing: run scripts/setup.sh --test (openssh-server, sshpass)")
    key = tmp_path_factory.mktemp("sshd") / "hostkey"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True, timeout=30)
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation directory
    return key


class Sshd:
    """sshd -D -e in ``host``; its log to the journal (systemd-cat -t sshd) or, syslog-formatted, to ``authlog``."""

    def __init__(self, host: Host, base: Path, hostkey: Path, authlog: Path | None) -> None:
        self.host = host
        self.authlog = authlog
        self.config = base / "sshd_config"
        self.config.write_text(
            f"ListenAddress {host.addr4}\nPort 22\nHostKey {hostkey}\nPidFile none\nUsePAM no\n"
            "PasswordAuthentication yes\nKbdInteractiveAuthentication no\nPubkeyAuthentication no\n"
            "PermitRootLogin no\nAllowUsers portsentinel-nobody-at-all\nMaxStartups 50\nLoginGraceTime 10\n"
            "LogLevel INFO\n")
        self.proc: subprocess.Popen[bytes] | None = None
        self.pump: threading.Thread | None = None

    def __enter__(self) -> Sshd:
        argv = [SSHD, "-D", "-e", "-f", str(self.config)]
        if self.authlog is None:
            self.proc = self.host.popen(["systemd-cat", "-t", "sshd", *argv])
        else:
            self.proc = self.host.popen(argv, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
            assert self.proc.stderr is not None
            self.pump = threading.Thread(target=self._syslog, args=(self.proc.stderr, self.proc.pid), daemon=True)
            self.pump.start()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise LabError(f"sshd exited {self.proc.returncode}")
            if ":22 " in self.host.run(["ss", "-Hltn", "sport", "=", ":22"], check=False).stdout:
                return self
            time.sleep(0.05)
        raise LabError("sshd is not listening")

    def _syslog(self, stream: IO[bytes], pid: int) -> None:
        """What rsyslog would write to auth.log: ``Mon dd HH:MM:SS host sshd[pid]: message``."""
        assert self.authlog is not None
        with open(self.authlog, "a", encoding="utf-8") as out:
            for raw in stream:
                stamp = time.strftime("%b %e %H:%M:%S")
                out.write(f"{stamp} victim sshd[{pid}]: {raw.decode(errors='replace').rstrip()}\n")
                out.flush()

    def __exit__(self, *exc: object) -> None:
        assert self.proc is not None
        self.proc.terminate()
        self.proc.wait(timeout=10)
        if self.pump is not None:
            self.pump.join(timeout=5)


def failed_login(attacker: Host, src: str, target: str) -> None:
    """One password login as a user that does not exist, with a wrong password (always fails)."""
    out = attacker.run(
        ["timeout", "20", "sshpass", "-p", "wrong-password", "ssh", "-b", src, "-o", "StrictHostKeyChecking=no",
         "-o", "UserKnownHostsFile=/dev/null", "-o", "PubkeyAuthentication=no", "-o", "BatchMode=no",
         "-o", "PreferredAuthentications=password", "-o", "NumberOfPasswordPrompts=1", "-o", "ConnectTimeout=5",
         f"{NO_SUCH_USER}@{target}", "true"], check=False, timeout=30)
    assert out.returncode != 0 and "Permission denied" in out.stderr, out.stderr


def nmap_version(attacker: Host, src: str, target: str) -> None:
    attacker.run(["timeout", "30", "nmap", "-n", "-Pn", "-sV", "-p22", "--max-retries", "1", "-S", src,
                  "-e", attacker.iface, target], timeout=40)


def banned_in_nft(victim: Host) -> str:
    return victim.run(["nft", "list", "set", "inet", "portsentinel", "ssh_v4"], check=False).stdout


def _why(resp: ResponderProcess, authlog: Path | None) -> str:
    """What sshd logged and what the responder decided, for a failure message (this case has failed under
    heavy load only; the next reader needs the lines)."""
    if authlog is not None:
        lines = authlog.read_text(errors="replace").splitlines()
    else:
        out = subprocess.run(["journalctl", "--no-pager", "-o", "cat", "-t", "sshd", "-n", "40"],
                             capture_output=True, text=True, check=False)
        lines = out.stdout.splitlines()
    decided = [f"{r.get('PS_EVENT')} {r.get('PS_SRC')} {r.get('MESSAGE', '')[:120]}" for r in resp.records()][-20:]
    return "sshd:\n" + "\n".join(lines[-40:]) + "\nresponder:\n" + "\n".join(decided) + "\n" + resp.stderr()


@pytest.mark.parametrize("backend", ["systemd", "pyinotify"])
@pytest.mark.parametrize("mode", ["normal", "aggressive"])
def test_real_sshd_is_banned(mlab: Lab, tmp_path: Path, hostkey: Path, backend: str, mode: str,
                             request: pytest.FixtureRequest) -> None:
    if backend == "systemd":
        request.getfixturevalue("journald")
    authlog = None if backend == "systemd" else tmp_path / "auth.log"
    if authlog is not None:
        authlog.touch(mode=0o640)
    spec = "sshd" if mode == "normal" else "sshd[mode=aggressive]"
    cfg = make_config(tmp_path, (ROOT / "jail.conf").read_text())
    (cfg / "jail.local").write_text(
        f"[sshd]\nenabled = true\nfilter = {spec}\nmaxretry = 2\nfindtime = 300\nbantime = 120\n"
        f"logpath = {authlog or '/nonexistent'}\naction = nftables[name=ssh]\n")
    (scanner, _), (guesser, _) = mlab.aliases(mlab.attacker, 2)
    victim = mlab.victim
    with ResponderProcess(victim, tmp_path, cfg, backend=backend) as resp, \
            Sshd(victim, tmp_path, hostkey, authlog):
        nmap_version(mlab.attacker, scanner, victim.addr4)
        nmap_version(mlab.attacker, scanner, victim.addr4)
        failed_login(mlab.attacker, guesser, victim.addr4)
        if mode == "aggressive":
            banned = resp.wait_for(lambda r: r.get("PS_EVENT") == "ban" and r.get("PS_SRC") == scanner, 40)
            assert banned, _why(resp, authlog)
        banned = resp.wait_for(lambda r: r.get("PS_EVENT") == "ban" and r.get("PS_SRC") == guesser, 40)
        assert banned, _why(resp, authlog)
        assert banned[0].get("PS_JAIL") == "sshd"
        elements = banned_in_nft(victim)
        assert guesser in elements
        # normal mode: version probes are no failures (their lines came before the guesser's: all were read)
        assert (scanner in elements) == (mode == "aggressive"), elements
        bans = {b["ip"] for b in resp.ask("banned")["bans"]}
        assert bans == ({guesser, scanner} if mode == "aggressive" else {guesser})
        # the ban holds: the guesser's next connection gets no answer
        again = mlab.attacker.run(["timeout", "10", "ssh", "-b", guesser, "-o", "ConnectTimeout=2", "-o",
                                   "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o",
                                   "UserKnownHostsFile=/dev/null", f"{NO_SUCH_USER}@{victim.addr4}", "true"],
                                  check=False, timeout=20)
        assert again.returncode != 0 and "Permission denied" not in again.stderr, again.stderr
        assert resp.stop() == 0
    if authlog is not None:
        assert f"Failed password for invalid user {NO_SUCH_USER} from {guesser}" in authlog.read_text()
