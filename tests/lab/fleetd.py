"""portsentinel-fleet daemons in the NATS lab (tests/lab/nats.py): one per client host, each with its own files.

A daemon reads the responder's decisions from a JSON-lines file the test writes (``decide``), and writes remote
bans to its own output file (``lines``); state, wake socket and status file live in the host's directory. It runs
inside the host's namespace, so it reaches the cluster over the lab's bridge only. Every wait is bounded.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.lab.nats import NatsLab

FLEET = str(Path(sys.executable).parent / "portsentinel-fleet")

BUCKET_CODE = """
import asyncio, os, sys, nats
from portsentinel.fleet.bucket import bucket_config, create_bucket
from portsentinel.fleet.nats_errors import PermissionWatch
async def main():
    watch = PermissionWatch()
    nc = await nats.connect(os.environ["PS_NATS_SERVERS"].split(","), connect_timeout=3, error_cb=watch.error_cb)
    config = bucket_config(sys.argv[1], replicas=int(sys.argv[2]), max_age=30 * 86400)
    what, info = await create_bucket(nc, watch, config)
    assert info.config.allow_rollup_hdrs is False, info.config
    print(what)
    await nc.close()
asyncio.run(main())
"""


def make_bucket(lab: NatsLab, host: str, name: str = "portsentinel_bans") -> None:
    """The bucket as `portsentinel fleet setup --create-bucket` makes it (rollups refused), created from ``host``
    without credentials (these lab servers run without authorization)."""
    lab.python(host, BUCKET_CODE, name, str(min(3, len(lab.servers))), timeout=60)


class Daemon:
    def __init__(self, lab: NatsLab, host: str, workdir: Path, *, name: str | None = None,
                 **settings: object) -> None:
        """The daemon of lab host ``host``, calling itself ``name`` in the fleet (default: ``host``)."""
        self.lab = lab
        self.host = host
        self.dir = workdir / f"fleet-{host}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.decisions = self.dir / "responder.jsonl"
        self.decisions.touch(mode=0o640)
        os.chmod(self.decisions, 0o640)
        self.output = self.dir / "remote.jsonl"
        self.status_path = self.dir / "status.json"
        self.conf = self.dir / "fleet.conf"
        conf = {"enabled": "true", "host": name or host, "servers": ", ".join(lab.urls()), "decisions": self.decisions,
                "state": self.dir / "state.sqlite3", "output": self.output, "wake": self.dir / "wake",
                "responder_wake": "", "status": self.status_path, "heartbeat": "1s"}
        conf.update(settings)
        self.conf.write_text("[fleet]\n" + "".join(f"{k} = {v}\n" for k, v in conf.items()))
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = self.dir / "daemon.log"

    def start(self) -> Daemon:
        self.status_path.unlink(missing_ok=True)
        with open(self.log, "ab") as log:
            self.proc = self.lab.popen(self.host, [FLEET, "--config", str(self.conf), "-v"], stdout=log,
                                       stderr=subprocess.STDOUT)
        self.wait(lambda: self.status_path.exists(), 20, "status file")
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop by PID (SIGTERM: a clean stop; SIGKILL: a crash)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=15)
        self.proc = None

    def decide(self, event: str, addr: str, *, jail: str = "portsentinel", bantime: int = 600,
               share: str = "1", fleet: bool = False) -> None:
        """One decision record of the responder, as its JSON-lines decisions file carries it (``fleet``: the
        record of ``portsentinel unban --fleet``)."""
        rec = {"SYSLOG_IDENTIFIER": "portsentinel-responder", "PS_EVENT": event, "PS_JAIL": jail, "PS_SRC": addr,
               "PS_BANTIME": str(bantime), "PS_TIME": f"{time.time():.6f}", "PS_SCAN": "syn", "PS_SHARE": share,
               "MESSAGE": f"jail {jail}: {event} {addr}"}
        if fleet:
            del rec["PS_JAIL"]
            rec["PS_FLEET"] = "1"
        with open(self.decisions, "a") as fh:
            fh.write(json.dumps(rec) + "\n")
        self.nudge()

    def nudge(self) -> None:
        """The responder's wake-up datagram to the daemon."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            try:
                sock.sendto(b"", str(self.dir / "wake"))
            except OSError:
                pass

    def lines(self) -> list[dict[str, str]]:
        try:
            text = self.output.read_text()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def banned(self) -> dict[str, str]:
        """addr -> origin of every ``ban`` line so far."""
        return {line["PS_SRC"]: line["PS_ORIGIN"] for line in self.lines() if line["PS_EVENT"] == "ban"}

    def status(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.status_path.read_text())
        return data

    def wait(self, cond: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"[{self.host}] daemon exited {self.proc.returncode}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"[{self.host}] {what}: not within {timeout:.0f}s\n{self.log_tail()}")
            time.sleep(0.05)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""
