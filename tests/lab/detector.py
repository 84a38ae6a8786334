"""Run a real portsentinel-detector inside a lab namespace and read what it wrote (tests and benchmarks)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .netns import Host, LabError

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = ROOT / ".venv" / "bin"


def tool(name: str) -> str:
    """A console script of the project: the venv's, else the one on PATH."""
    path = VENV_BIN / name
    return str(path) if path.exists() else name


class LabProcess:
    """A project daemon running in a lab namespace: records to read, SIGTERM to stop, a context manager."""

    name = "process"
    proc: subprocess.Popen[bytes] | None = None
    _err: Any = None

    def start(self) -> Any:
        raise NotImplementedError

    def records(self) -> list[dict[str, Any]]:
        raise NotImplementedError

    def wait_for(self, pred: Any, timeout: float = 10) -> list[dict[str, Any]]:
        """Records matching ``pred`` once at least one exists (or [] after ``timeout``)."""
        deadline = time.monotonic() + timeout
        while True:
            got = [r for r in self.records() if pred(r)]
            if got or time.monotonic() > deadline:
                return got
            time.sleep(0.05)

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def stop(self, timeout: float = 20) -> int:
        """SIGTERM and wait: returns the exit status."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
            raise LabError(f"{self.name} ignored SIGTERM") from None
        finally:
            if self._err is not None:
                self._err.close()
        return rc

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.stop()


class DetectorProcess(LabProcess):
    """``portsentinel-detector`` in ``host``, writing JSON lines to ``jsonl`` (or the journal)."""

    name = "detector"

    def __init__(self, host: Host, jsonl: Path, *, modes: str | None = None, config: Path | None = None,
                 output: str = "jsonl", extra: Sequence[str] = ()) -> None:
        self.host = host
        self.jsonl = jsonl
        self.output = output
        argv = [tool("portsentinel-detector"), "--output", output, "--jsonl", str(jsonl), "--log-level", "warning",
                "--rearm", str(jsonl.parent / "rearm.sock")]  # never the system's default path
        if modes:
            argv += ["--mode", modes]
        if config:
            argv += ["--config", str(config)]
        argv += list(extra)
        self.argv = argv
        self.stderr_path = jsonl.with_suffix(".stderr")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20) -> DetectorProcess:
        self._err = open(self.stderr_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = self.host.popen(self.argv, stdout=self._err, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise LabError(f"detector exited {self.proc.returncode}: {self.stderr()}")
            if self.output != "journal" and any(r.get("PS_EVENT") == "start" for r in self.records()):
                return self
            if self.output == "journal" and self._journal_started():
                return self
            time.sleep(0.05)
        raise LabError(f"detector did not start within {timeout}s: {self.stderr()}")

    def _journal_started(self) -> bool:
        assert self.proc is not None
        out = subprocess.run(["journalctl", "-o", "json", "SYSLOG_IDENTIFIER=portsentinel-detector",
                              "PS_EVENT=start", f"_PID={self.proc.pid}"], capture_output=True, text=True)
        if out.returncode != 0:
            return False
        # `ip netns exec` execs the detector, so the PID is the detector's own.
        return bool(out.stdout.strip())

    def stderr(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def records(self) -> list[dict[str, Any]]:
        try:
            text = self.jsonl.read_text()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in text.splitlines() if line.strip()]


def nmap(host: Host, flag: str, target: str, ports: str, *, source: str | None = None,
         extra: Sequence[str] = (), timeout: float = 120) -> str:
    """One bounded nmap run from ``host`` against ``target`` (an address in the victim namespace)."""
    argv = ["timeout", str(int(timeout)), "nmap", "-n", "-Pn", flag, "-p", ports, "--max-retries", "1"]
    if ":" in target:
        argv.append("-6")
    if source:
        argv += ["-S", source, "-e", host.iface]
    argv += [*extra, target]
    proc = host.run(argv, check=False, timeout=timeout + 10)
    if proc.returncode != 0:
        raise LabError(f"nmap failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def python_in(host: Host, code: str, timeout: float = 60) -> str:
    """Run a Python snippet (the project's venv, so scapy is there) inside ``host``."""
    py = str(VENV_BIN / "python") if (VENV_BIN / "python").exists() else sys.executable
    proc = host.run(["timeout", str(int(timeout)), py, "-c", code], check=False, timeout=timeout + 10)
    if proc.returncode != 0:
        raise LabError(f"python in {host.ns} failed: {proc.stderr.strip()[-2000:]}")
    return proc.stdout


__all__ = ["DetectorProcess", "nmap", "python_in", "tool"]
