"""Whole fleet hosts in the NATS lab (issue 13, tests/integration/test_fleet_e2e.py and bench/fleet_e2e_bench.py).

A fleet host is a lab namespace that behaves like a machine of its own: its own network namespace (from
tests/lab/nats.py, on the lab's bridge, no default route) AND its own mount namespace holding a private journald,
so the detector -> journal -> responder -> journal -> portsentinel-fleet path runs exactly as on a real host, and
the five hosts' journals never mix. Every process of the host is started with ``nsenter`` into both namespaces
(``Machine.argv``); the journald's PID names the mount namespace.

Credentials and TLS come from ``portsentinel fleet setup`` (run before the servers start, on the lab's addresses);
the bucket is made with ``--create-bucket`` and the admin seed. The scanner is one more lab host, given fresh
source addresses (``FleetSite.aliases``). Teardown stops every process by PID and removes the namespaces, even when
a test failed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.lab.detector import DetectorProcess, tool
from tests.lab.nats import NatsLab, nats_problem
from tests.lab.netns import Host, LabError, sweep_stale
from tests.lab.nftset import set_addresses
from tests.lab.pipeline import ResponderProcess, make_config

FLEET = str(Path(sys.executable).parent / "portsentinel-fleet")
PORTSENTINEL = str(Path(sys.executable).parent / "portsentinel")
SCANNER = "x"

JOURNALD = ("mkdir -p /run/systemd/journal /run/log/journal && "
            "mount -t tmpfs -o mode=0755 tmpfs /run/systemd/journal && "
            "mount -t tmpfs -o mode=2755 tmpfs /run/log/journal && "
            "if [ -d /var/log/journal ]; then mount -t tmpfs -o mode=2755 tmpfs /var/log/journal; fi && "
            # `ip netns exec` remounted /sys for the namespace, without cgroups: journald needs a cgroup root
            # (a cgroup2 view, in this mount namespace only)
            "mount -t cgroup2 cgroup2 /sys/fs/cgroup && "
            "exec /lib/systemd/systemd-journald")

JAIL_CONF = """[DEFAULT]
bantime.increment = false
ignoreip = {ignoreip}

[portsentinel]
enabled = true
filter = portsentinel
share = true
bantime = {bantime}
action = nftables[name=local]

[fleet]
enabled = true
filter = portsentinel-fleet
logpath = {remote}
logowner = root
maxbans_per_minute = 0
bantime.fleetmultipliers = 1 2 4
bantime.maxtime = 1h
action = nftables[name=fleet]
"""


def wait_until(pred: Callable[[], bool], timeout: float, what: str, info: Callable[[], str] = str) -> None:
    """Poll ``pred`` (every 50 ms) for at most ``timeout`` seconds; AssertionError naming ``what`` after."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f} s\n{info()}")
        time.sleep(0.05)


@dataclass
class Machine(Host):
    """A lab namespace with a mount namespace and a journald of its own (``mnt_pid``: that journald's PID)."""

    mnt_pid: int = 0

    def argv(self, cmd: Sequence[str]) -> list[str]:
        if not self.mnt_pid:
            return super().argv(cmd)
        return ["nsenter", f"--mount=/proc/{self.mnt_pid}/ns/mnt", f"--net=/run/netns/{self.ns}", "--", *cmd]

    def journal(self, *matches: str, timeout: float = 30) -> list[dict[str, Any]]:
        """``journalctl -o json MATCH…`` on this host's own journal."""
        out = self.run(["journalctl", "--no-pager", "-o", "json", *matches], check=False, timeout=timeout).stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]


class HostDetector(DetectorProcess):
    """The detector, writing to its host's journal (its start record is looked for there)."""

    def _journal_started(self) -> bool:
        assert self.proc is not None and isinstance(self.host, Machine)
        return bool(self.host.journal("SYSLOG_IDENTIFIER=portsentinel-detector", "PS_EVENT=start",
                                      f"_PID={self.proc.pid}"))


class HostResponder(ResponderProcess):
    """The responder (journal backend), its decisions read back from its host's journal."""

    def records(self) -> list[dict[str, str]]:
        assert isinstance(self.host, Machine)
        if self.proc is None:
            return []
        return self.host.journal("SYSLOG_IDENTIFIER=portsentinel-responder", f"_PID={self.proc.pid}")


@dataclass
class FleetHost:
    """One fleet host: detector, responder (a sharing jail + the [fleet] jail) and portsentinel-fleet."""

    name: str
    machine: Machine
    base: Path
    setup_dir: Path
    bantime: str = "10m"
    ignoreip: str = ""
    #: A folder: the responder and portsentinel-fleet run under cProfile, writing responder.prof and fleet.prof
    #: there when they stop (bench/fleet_e2e_bench.py --profile).
    profile: Path | None = None
    detector: HostDetector | None = None
    responder: HostResponder | None = None
    fleet: subprocess.Popen[bytes] | None = None
    _logs: list[Any] = field(default_factory=list)

    @property
    def remote(self) -> Path:
        return self.base / "fleet" / "remote.jsonl"

    @property
    def status_path(self) -> Path:
        return self.base / "fleet" / "status.json"

    def start(self, *, detector: bool = True, fleet: bool = True) -> FleetHost:
        """Start the host's daemons; ``detector=False`` (a host that only receives) and ``fleet=False`` (not yet
        joined) leave one out. Returns once each is up."""
        self.base.mkdir(parents=True, exist_ok=True)
        if self.responder is None:
            cfg = make_config(self.base, JAIL_CONF.format(bantime=self.bantime, remote=self.remote,
                                                          ignoreip=self.ignoreip or "127.0.0.1/8"))
            self.responder = HostResponder(self.machine, self.base, cfg, backend="systemd")
            self.responder.argv[:1] = self._profiled("responder", self.responder.argv[0])
            self.responder.argv += ["--fleet-wake", str(self.base / "fleet" / "wake")]
            (self.base / "fleet").mkdir(exist_ok=True)
            self.responder.start()
        if detector and self.detector is None:
            self.detector = HostDetector(self.machine, self.base / "alerts.jsonl", modes="stcp", output="journal",
                                         extra=["--wake", self.responder.wake])
            self.detector.start()
        if fleet and self.fleet is None:
            self.join()
        return self

    def join(self, timeout: float = 30, *, wait: bool = True) -> None:
        """Start portsentinel-fleet with the host's credentials from ``fleet setup`` (fleet.local beside it)."""
        d = self.base / "fleet"
        d.mkdir(exist_ok=True)
        conf = {"decisions": "journal", "responder_uid": "0", "state": d / "state.sqlite3", "output": self.remote,
                "wake": d / "wake", "responder_wake": self.responder.wake if self.responder else "",
                "status": self.status_path, "heartbeat": "1s", "origin_rate": "100000", "origin_max": "200000"}
        (d / "fleet.conf").write_text("[fleet]\n" + "".join(f"{k} = {v}\n" for k, v in conf.items()))
        (d / "fleet.local").write_text((self.setup_dir / "hosts" / self.name / "fleet.local").read_text())
        log = open(d / "daemon.log", "ab")  # noqa: SIM115 - closed in stop()
        self._logs.append(log)
        self.fleet = self.machine.popen([*self._profiled("fleet", FLEET), "--config", str(d / "fleet.conf"), "-v"],
                                        stdout=log,
                                        stderr=subprocess.STDOUT)
        if wait:
            wait_until(lambda: self.status().get("connected") is True, timeout, f"[{self.name}] fleet connected",
                       self.fleet_log)

    def _profiled(self, name: str, script: str) -> list[str]:
        if self.profile is None:
            return [script]
        return [sys.executable, "-m", "cProfile", "-o", str(self.profile / f"{self.name}-{name}.prof"), script]

    def stop_fleet(self) -> None:
        """SIGTERM portsentinel-fleet (by PID) and wait: a clean stop (its profile written)."""
        if self.fleet is not None and self.fleet.poll() is None:
            self.fleet.terminate()
            self.fleet.wait(30)

    def status(self) -> dict[str, Any]:
        if self.fleet is not None and self.fleet.poll() is not None:
            raise AssertionError(f"[{self.name}] portsentinel-fleet exited {self.fleet.returncode}\n"
                                 f"{self.fleet_log()}")
        try:
            data: dict[str, Any] = json.loads(self.status_path.read_text())
        except (OSError, ValueError):
            return {}
        return data

    def fleet_log(self) -> str:
        path = self.base / "fleet" / "daemon.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-30:]) if path.exists() else ""

    def nft_set(self, name: str) -> set[str]:
        """The elements of this host's nft set ``name`` (``local_v4``, ``fleet_v4``), from its own kernel."""
        return set_addresses(self.machine, name, missing_ok=True, timeout=60)

    def banned(self, addr: str, *, local: bool = False) -> bool:
        return addr in self.nft_set(("local" if local else "fleet") + "_v4")

    def ask(self, *args: str) -> dict[str, Any]:
        assert self.responder is not None
        return self.responder.ask(*args)

    def info(self) -> str:
        err = self.responder.stderr()[-2000:] if self.responder else ""
        return f"--- {self.name} responder\n{err}\n--- {self.name} fleet\n{self.fleet_log()}"

    def stop(self) -> None:
        for proc in (self.detector, self.responder):
            if proc is not None and proc.proc is not None and proc.proc.poll() is None:
                try:
                    proc.stop()
                except LabError:
                    pass
        if self.fleet is not None and self.fleet.poll() is None:
            self.fleet.terminate()
            try:
                self.fleet.wait(10)
            except subprocess.TimeoutExpired:
                self.fleet.kill()
                self.fleet.wait(5)
        for log in self._logs:
            log.close()
        self.machine.stop_all()


class FleetSite:
    """A three-server cluster with TLS and per-host nkeys, fleet hosts with private journals, and a scanner."""

    def __init__(self, hosts: Sequence[str], workdir: Path | None = None) -> None:
        self.names = list(hosts)
        self.work = workdir or Path(tempfile.mkdtemp(prefix="pslab-fleete2e-"))
        self.setup_dir = self.work / "setup"
        self.lab = NatsLab([*self.names, SCANNER], servers=3, scheme="tls", prepare=self._prepare)
        self.hosts: dict[str, FleetHost] = {}
        self._journalds: list[subprocess.Popen[bytes]] = []
        self._aliases = 0

    def _prepare(self, lab: NatsLab) -> dict[str, Path]:
        from portsentinel.client.cli import main as portsentinel

        servers = ",".join(f"{s.name}={s.host.addr4}" for s in lab.servers)
        out = self.setup_dir
        rc = portsentinel(["fleet", "setup", "--hosts", ",".join(self.names), "--servers", servers, "--out", str(out),
                           "--server-dir", f"{out}/servers/{{name}}", "--host-dir", f"{out}/hosts/{{name}}",
                           "--store-dir", f"{lab.workdir}/{{name}}/store"])
        if rc != 0:
            raise LabError(f"portsentinel fleet setup exited {rc}")
        return {s.name: out / "servers" / s.name / "nats-server.conf" for s in lab.servers}

    def up(self) -> FleetSite:
        try:
            self.lab.up()
            self.lab.run(self.names[0], [PORTSENTINEL, "fleet", "setup", "--create-bucket", "--out",
                                         str(self.setup_dir)], timeout=90)
            for name in self.names:
                self.hosts[name] = FleetHost(name, self._machine(name), self.work / name, self.setup_dir)
        except BaseException:
            self.down()
            raise
        return self

    def _machine(self, name: str) -> Machine:
        host = self.lab.host(name)
        proc = host.popen(["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", JOURNALD])
        self._journalds.append(proc)
        socks = [Path(f"/proc/{proc.pid}/root/run/systemd/journal/{s}") for s in ("socket", "stdout")]

        def ready() -> bool:
            # until the PID is journald itself, /proc/PID/root still shows the mounts from before the tmpfs
            try:
                running = os.readlink(f"/proc/{proc.pid}/exe").endswith("systemd-journald")
            except OSError:
                return proc.poll() is not None
            return running and all(s.is_socket() for s in socks)

        wait_until(ready, 10, f"[{name}] journald")
        if proc.poll() is not None:
            raise LabError(f"[{name}] journald exited {proc.returncode}")
        machine = Machine(host.ns, host.iface, host.addr4, host.addr6, mnt_pid=proc.pid)
        # journald makes its files at the first entry; readers that start before would find none
        machine.run(["systemd-cat", "-t", "pslab", "echo", f"fleet host {name} up"])
        files = Path(f"/proc/{proc.pid}/root/run/log/journal")
        wait_until(lambda: any(files.glob("*/*.journal")), 10, f"[{name}] journal files")
        return machine

    def start(self, names: Sequence[str], *, detector: bool = True, fleet: bool = True) -> None:
        """Start the named hosts' daemons side by side (threads only wait on child processes)."""
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(len(names)) as pool:
            for started in [pool.submit(self.hosts[n].start, detector=detector, fleet=fleet) for n in names]:
                started.result()

    @property
    def scanner(self) -> Host:
        return self.lab.host(SCANNER)

    def aliases(self, count: int) -> list[str]:
        """``count`` fresh IPv4 source addresses on the scanner (198.18.N.100 and up, inside the lab's /24)."""
        out = []
        for _ in range(count):
            addr = f"198.18.{self.lab.net}.{100 + self._aliases}"
            self._aliases += 1
            if self._aliases > 150:
                raise LabError("out of scanner aliases")
            self.scanner.run(["ip", "addr", "add", f"{addr}/24", "dev", self.scanner.iface])
            out.append(addr)
        return out

    def info(self) -> str:
        return "\n".join(h.info() for h in self.hosts.values())

    def down(self) -> None:
        for host in self.hosts.values():
            host.stop()
        for proc in self._journalds:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
        self.lab.down()


@contextmanager
def fleet_site(hosts: Sequence[str] = ("a", "b", "c", "d", "e")) -> Iterator[FleetSite]:
    problem = nats_problem()
    if problem:
        raise LabError(problem)
    sweep_stale()
    site = FleetSite(hosts)
    try:
        yield site.up()
    finally:
        site.down()
        if os.environ.get("PS_KEEP_LAB") != "1":
            import shutil

            shutil.rmtree(site.work, ignore_errors=True)


__all__ = ["FleetHost", "FleetSite", "Machine", "fleet_site", "tool", "wait_until"]
