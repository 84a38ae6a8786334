"""Run an action's argv without a shell, bounded in time, with a minimal environment.

The responder runs inside the namespace it protects, so there is no namespace logic here; tests pass a
``prefix`` (``ip netns exec NS``) so every command lands in a namespace they created. An argv whose first
word is ``@name`` is an internal command (responder.adapters.internal): run in-process without a prefix, or as
``python -m portsentinel.responder.adapters.internal`` under the prefix, so it too runs inside the test's namespace.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from portsentinel.responder.adapters import internal

MINIMAL_ENV: Mapping[str, str] = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}
MAX_OUTPUT = 4096
TIMEOUT_STATUS = 124  # as timeout(1)
NOT_FOUND_STATUS = 127


@dataclass(frozen=True)
class Result:
    """What a command did. ``status`` is the exit status (negative: killed by that signal)."""

    argv: tuple[str, ...]
    status: int
    stdout: str = ""
    stderr: str = ""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == 0


class Runner(Protocol):
    """Runs one argv; never raises for a failing command (the Result says so)."""

    def run(self, argv: Sequence[str], *, input: str | None = None, timeout: float | None = None) -> Result: ...


def _cut(text: str) -> str:
    return text if len(text) <= MAX_OUTPUT else text[:MAX_OUTPUT] + "…[truncated]"


class SubprocessRunner:
    """The real runner: ``subprocess.run(prefix + argv, shell=False)``."""

    def __init__(
        self,
        prefix: Sequence[str] = (),
        *,
        timeout: float = 30.0,
        env: Mapping[str, str] | None = None,
        python: str = sys.executable,
    ) -> None:
        self.prefix = tuple(prefix)
        self.timeout = timeout
        self.env = dict(MINIMAL_ENV if env is None else env)
        self.python = python

    def run(self, argv: Sequence[str], *, input: str | None = None, timeout: float | None = None) -> Result:
        argv = tuple(argv)
        if not argv:
            return Result(argv, NOT_FOUND_STATUS, stderr="empty command")
        limit = self.timeout if timeout is None else timeout
        if argv[0].startswith("@") and not self.prefix:
            return self._internal(argv)
        full = list(argv)
        env = self.env
        if argv[0].startswith("@"):
            full = [self.python, "-m", "portsentinel.responder.adapters.internal", argv[0][1:], *argv[1:]]
            # The child finds portsentinel where this process found it (a venv, or the .deb's private directory).
            env = {**self.env, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        start = time.monotonic()
        try:
            proc = subprocess.run(
                [*self.prefix, *full], shell=False, input=input, capture_output=True, text=True,
                errors="replace", timeout=limit, env=env, close_fds=True, stdin=None if input is not None
                else subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired as exc:
            err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
            return Result(argv, TIMEOUT_STATUS, stderr=_cut(f"timed out after {limit:g}s\n{err}"),
                          seconds=time.monotonic() - start)
        except OSError as exc:
            return Result(argv, NOT_FOUND_STATUS, stderr=_cut(str(exc)), seconds=time.monotonic() - start)
        return Result(argv, proc.returncode, _cut(proc.stdout), _cut(proc.stderr), time.monotonic() - start)

    def _internal(self, argv: tuple[str, ...]) -> Result:
        start = time.monotonic()
        status, out, err = internal.dispatch(argv[0][1:], list(argv[1:]))
        return Result(argv, status, _cut(out), _cut(err), time.monotonic() - start)
