"""Detector + responder in the victim namespace, with a config directory the test owns (tests and bench)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from .detector import ROOT, DetectorProcess, LabProcess, tool
from .netns import Host, LabError


def make_config(base: Path, jail_conf: str) -> Path:
    """A config dir: the project's filter.d/ and actions.d/, and the test's jail.conf."""
    cfg = base / "etc"
    cfg.mkdir(parents=True)
    shutil.copytree(ROOT / "filter.d", cfg / "filter.d")
    shutil.copytree(ROOT / "actions.d", cfg / "actions.d")
    (cfg / "jail.conf").write_text(jail_conf)
    return cfg


class ResponderProcess(LabProcess):
    name = "responder"

    def __init__(self, host: Host, base: Path, config: Path, *, backend: str = "pyinotify",
                 env: dict[str, str] | None = None) -> None:
        self.host = host
        self.env = None if env is None else {**os.environ, **env}
        self.base = base
        self.socket = str(base / "ctl.sock")
        self.wake = str(base / "wake.sock")
        self.rearm = str(base / "rearm.sock")
        self.decisions = base / "decisions.jsonl"
        self.state = base / "state"
        self.argv = [tool("portsentinel-responder"), "--config-dir", str(config), "--state-dir", str(self.state),
                     "--socket", self.socket, "--backend", backend, "--wake", self.wake,
                     "--decisions", str(self.decisions), "--rearm", self.rearm, "--log-level", "warning"]
        self.proc: subprocess.Popen[bytes] | None = None
        self.err_path = base / "responder.stderr"

    def start(self, timeout: float = 20) -> ResponderProcess:
        self._err = open(self.err_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = self.host.popen(self.argv, stdout=self._err, stderr=subprocess.STDOUT, env=self.env)
        with open(self.base / "responder.pids", "a") as fh:  # every responder run on this base, for records()
            fh.write(f"{self.proc.pid}\n")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise LabError(f"responder exited {self.proc.returncode}: {self.stderr()}")
            if Path(self.socket).exists() and self.ask("status").get("ok"):
                return self
            time.sleep(0.05)
        raise LabError(f"responder did not start: {self.stderr()}")

    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace") if self.err_path.exists() else ""

    def ask(self, *args: str) -> dict[str, Any]:
        out = subprocess.run([tool("portsentinel"), "--socket", self.socket, "--json", *args],
                             capture_output=True, text=True, timeout=30)
        try:
            answer: dict[str, Any] = json.loads(out.stdout or "{}")
        except ValueError:
            answer = {"ok": False, "error": out.stdout + out.stderr}
        return answer

    def records(self) -> list[dict[str, str]]:
        """Decisions from the JSON-lines file (file backend) or the journal (journal backend)."""
        recs: list[dict[str, str]] = []
        if self.decisions.exists():
            recs = [json.loads(line) for line in self.decisions.read_text().splitlines() if line.strip()]
        elif Path("/run/systemd/journal/socket").exists() and self.proc is not None:
            pids = (self.base / "responder.pids").read_text().split()
            matches = [m for pid in pids for m in ("+", f"_PID={pid}")][1:]
            out = subprocess.run(["journalctl", "--no-pager", "-o", "json", "SYSLOG_IDENTIFIER=portsentinel-responder",
                                  *matches], capture_output=True, text=True)
            recs = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
        return [view for rec in recs for view in per_address(rec)]

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self._err.close()


def per_address(entry: dict[str, Any]) -> list[dict[str, Any]]:
    """A journal entry as the tests read decisions: an aggregated ban record (PS_SRC repeated, PS_BATCH; see
    docs/records.md "Volume") is one view per address, each with its own PS_SRC; any other entry is itself."""
    nets = entry.get("PS_SRC_NET")
    if isinstance(nets, list):  # aggregated network bans: each one's PS_SRC is its network's own address
        return [{**entry, "PS_SRC_NET": net, "PS_SRC": net.partition("/")[0]} for net in nets]
    srcs = entry.get("PS_SRC")
    if not isinstance(srcs, list):
        return [entry]
    return [{**entry, "PS_SRC": src} for src in srcs]


def detector_for(host: Host, base: Path, modes: str, *, output: str = "jsonl") -> DetectorProcess:
    return DetectorProcess(host, base / "alerts.jsonl", modes=modes, output=output,
                           extra=["--wake", str(base / "wake.sock")])


def can_connect(host: Host, target: str, port: int, timeout: float = 1.0) -> bool:
    """A TCP connect from ``host`` (bounded): True when the handshake completes."""
    code = ("import socket,sys\ntry:\n socket.create_connection((sys.argv[1], int(sys.argv[2])), "
            f"timeout={timeout}).close(); print('yes')\nexcept OSError: print('no')")
    out = host.run([tool("python"), "-c", code, target, str(port)], check=False, timeout=timeout + 20)
    return out.stdout.strip() == "yes"
