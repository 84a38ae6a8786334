"""The namespace lab shared by tests and benchmarks (docs/testing.md).

An attacker and a protected ("victim") network namespace joined by a veth pair, with IPv4 and IPv6 addresses
from the documentation/benchmark ranges and no default route anywhere. Names carry this process's PID and a
random tag, so parallel runs cannot collide; namespaces left behind by a dead run are swept at start.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

PREFIX = "pslab"
_NAME_RE = re.compile(rf"^{PREFIX}-(\d+)-[0-9a-f]+-\w+$")
REQUIRED_TOOLS = ("ip", "nmap", "nft", "iptables", "tcpdump")


class LabError(RuntimeError):
    pass


def _run(argv: Sequence[str], *, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise LabError(f"{' '.join(argv)}: exit {proc.returncode}: {proc.stderr.strip()}")
    return proc


def lab_problem() -> str | None:
    """Why the lab cannot run here, or None."""
    if os.geteuid() != 0:
        return "the lab needs root"
    missing = [t for t in REQUIRED_TOOLS if shutil.which(t) is None]
    if missing:
        return f"missing tools: {', '.join(missing)} (run scripts/setup.sh --test)"
    return None


def sweep_stale() -> list[str]:
    """Remove lab namespaces whose creating process is gone. Returns the names removed."""
    removed = []
    out = _run(["ip", "netns", "list"], check=False).stdout
    for line in out.splitlines():
        name = line.split()[0] if line.split() else ""
        m = _NAME_RE.match(name)
        if not m:
            continue
        pid = int(m.group(1))
        if pid == os.getpid() or os.path.exists(f"/proc/{pid}"):
            continue
        _run(["ip", "netns", "del", name], check=False)
        removed.append(name)
    return removed


@dataclass
class Host:
    """One namespace of the lab."""

    ns: str
    iface: str
    addr4: str
    addr6: str
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def argv(self, cmd: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.ns, *cmd]

    def run(self, cmd: Sequence[str], *, check: bool = True, timeout: float = 120,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run a command inside this namespace, bounded by ``timeout`` seconds."""
        proc = subprocess.run(self.argv(cmd), capture_output=True, text=True, timeout=timeout, input=input)
        if check and proc.returncode != 0:
            raise LabError(f"[{self.ns}] {' '.join(cmd)}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
        return proc

    def popen(self, cmd: Sequence[str], **kw: object) -> subprocess.Popen[bytes]:
        """Start a background process inside this namespace; the lab kills it (by PID) at teardown."""
        proc: subprocess.Popen[bytes] = subprocess.Popen(self.argv(cmd), **kw)  # type: ignore[call-overload]
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)
            for pipe in (proc.stdin, proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()
        self.procs.clear()


class Lab:
    """Attacker and victim namespaces over one veth pair."""

    def __init__(self, hosts: int = 2) -> None:
        if hosts < 2:
            raise ValueError("a lab has at least an attacker and a victim")
        tag = f"{PREFIX}-{os.getpid()}-{secrets.token_hex(3)}"
        self.tag = tag
        net = secrets.randbelow(200) + 10
        self.subnet4 = f"198.18.{net}.0/24"
        self.subnet6 = f"2001:db8:{net:x}::/64"
        self.lab48 = f"2001:db8:{net:x}::/48"
        self.victim = Host(f"{tag}-vic", "vic0", f"198.18.{net}.1", f"2001:db8:{net:x}::1")
        self.attacker = Host(f"{tag}-atk", "atk0", f"198.18.{net}.2", f"2001:db8:{net:x}::2")
        self.extra: list[Host] = [
            Host(f"{tag}-h{i}", f"h{i}0", f"198.18.{net}.{i + 1}", f"2001:db8:{net:x}::{i + 1:x}")
            for i in range(2, hosts)
        ]
        self._created: list[str] = []
        self._aliases: list[tuple[str, str]] = []
        self._bridge = len(self.extra) > 0

    @property
    def hosts(self) -> list[Host]:
        return [self.victim, self.attacker, *self.extra]

    def up(self) -> Lab:
        try:
            self._up()
        except BaseException:
            self.down()
            raise
        return self

    def _up(self) -> None:
        for host in self.hosts:
            if _run(["ip", "netns", "list"]).stdout.find(host.ns) >= 0:
                raise LabError(f"namespace {host.ns} already exists")
            _run(["ip", "netns", "add", host.ns])
            self._created.append(host.ns)
            host.run(["ip", "link", "set", "lo", "up"])
            host.run(["sysctl", "-q", "-w", "net.ipv6.conf.all.accept_dad=0"])
        if not self._bridge:
            _run(["ip", "link", "add", "psv" + self.tag[-6:], "netns", self.victim.ns, "type", "veth",
                  "peer", "name", "psa" + self.tag[-6:], "netns", self.attacker.ns])
            self.victim.run(["ip", "link", "set", "psv" + self.tag[-6:], "name", self.victim.iface])
            self.attacker.run(["ip", "link", "set", "psa" + self.tag[-6:], "name", self.attacker.iface])
        else:
            # Star topology: a bridge in the victim namespace, one veth per other host.
            self.victim.run(["ip", "link", "add", "br0", "type", "bridge"])
            self.victim.run(["ip", "link", "set", "br0", "up"])
            for host in [self.attacker, *self.extra]:
                peer = "p" + secrets.token_hex(4)
                _run(["ip", "link", "add", peer, "netns", self.victim.ns, "type", "veth",
                      "peer", "name", host.iface, "netns", host.ns])
                self.victim.run(["ip", "link", "set", peer, "master", "br0", "up"])
            self.victim.iface = "br0"
        for host in self.hosts:
            host.run(["ip", "link", "set", host.iface, "up"])
            host.run(["ip", "addr", "add", f"{host.addr4}/24", "dev", host.iface])
            host.run(["ip", "-6", "addr", "add", f"{host.addr6}/64", "dev", host.iface, "nodad"])
            # The lab's /48 is on-link everywhere (not a default route): aliases live in /64s of their own.
            host.run(["ip", "-6", "route", "add", self.lab48, "dev", host.iface])
        # Wait until the link is up and both families answer.
        deadline = time.monotonic() + 10
        while True:
            ok4 = self.attacker.run(["ping", "-c1", "-W1", self.victim.addr4], check=False).returncode == 0
            ok6 = self.attacker.run(["ping", "-6", "-c1", "-W1", self.victim.addr6], check=False).returncode == 0
            if ok4 and ok6:
                break
            if time.monotonic() > deadline:
                raise LabError("lab link did not come up")
            time.sleep(0.1)
        for host in self.hosts:
            routes = host.run(["ip", "route", "show", "default"]).stdout.strip()
            routes += host.run(["ip", "-6", "route", "show", "default"]).stdout.strip()
            if routes:
                raise LabError(f"{host.ns} has a default route: {routes}")

    def aliases(self, host: Host, count: int) -> list[tuple[str, str]]:
        """Give ``host`` ``count`` more addresses (IPv4, IPv6), so one scanner can appear as several sources
        (``nmap -S ADDR -e IFACE``). Each IPv6 alias is in a /64 of its own (inside the lab's on-link /48): the
        detector and the responder count and ban IPv6 sources per /64, so a fresh source is a fresh /64."""
        net4 = self.subnet4.rsplit(".", 1)[0]
        net6 = self.subnet6.split("::")[0]
        out = []
        for _ in range(count):
            n = len(self._aliases) + 100
            a4, a6 = f"{net4}.{n}", f"{net6}:{n:x}::{n:x}"
            host.run(["ip", "addr", "add", f"{a4}/24", "dev", host.iface])
            host.run(["ip", "-6", "addr", "add", f"{a6}/64", "dev", host.iface, "nodad"])
            self._aliases.append((a4, a6))
            out.append((a4, a6))
        return out

    def down(self) -> None:
        for host in self.hosts:
            host.stop_all()
        for ns in reversed(self._created):
            for pid in _run(["ip", "netns", "pids", ns], check=False).stdout.split():
                # Only processes the lab started live here; kill stragglers by PID.
                try:
                    os.kill(int(pid), 9)
                except (ProcessLookupError, ValueError):
                    pass
            _run(["ip", "netns", "del", ns], check=False)
        self._created.clear()

    def __enter__(self) -> Lab:
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.down()


@contextmanager
def lab(hosts: int = 2) -> Iterator[Lab]:
    problem = lab_problem()
    if problem:
        raise LabError(problem)
    sweep_stale()
    with Lab(hosts) as the_lab:
        yield the_lab
