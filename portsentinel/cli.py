"""portsentinel: the client. `run` starts the pipeline in the foreground; the rest talk to the responder."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path


def _script(name: str) -> str:
    """A sibling console script (same venv or prefix as this one), else the name for PATH lookup."""
    here = Path(sys.argv[0]).resolve().parent if sys.argv and sys.argv[0] else None
    if here and (here / name).exists():
        return str(here / name)
    return name


def cmd_run(args: argparse.Namespace) -> int:
    """Detector (and responder, once built) in the foreground; Ctrl-C or SIGTERM stops both."""
    det_argv = [_script("portsentinel-detector")]
    if args.config:
        det_argv += ["--config", args.config]
    if args.jsonl:
        det_argv += ["--jsonl", args.jsonl]
    if args.output:
        det_argv += ["--output", args.output]
    procs = [subprocess.Popen(det_argv)]
    responder = [_script("portsentinel-responder"), "--backend", "auto"]
    probe = subprocess.run([*responder[:1], "--help"], capture_output=True, text=True)
    if probe.returncode == 0:
        procs.append(subprocess.Popen(responder))
    else:
        print("portsentinel: running the detector only (the responder is not built yet)", file=sys.stderr)

    stop = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    rc = 0
    while not stop:
        for p in procs:
            if p.poll() is not None:
                rc = p.returncode or 1
                stop = True
        time.sleep(0.2)
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
    return rc


def cmd_check_config(args: argparse.Namespace) -> int:
    argv = [_script("portsentinel-detector"), "--check"]
    if args.config:
        argv += ["--config", args.config]
    return subprocess.run(argv).returncode


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="portsentinel", description="Port-scan detection and response.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = sub.add_parser("run", help="run detector and responder in the foreground (embedded default config)")
    run.add_argument("--config", metavar="FILE", help="detector configuration file")
    run.add_argument("--output", choices=("journal", "jsonl", "auto"), help="where the detector's records go")
    run.add_argument("--jsonl", metavar="PATH", help="the JSON-lines file")
    run.set_defaults(func=cmd_run)
    chk = sub.add_parser("check-config", help="validate the configuration and exit")
    chk.add_argument("--config", metavar="FILE", help="detector configuration file")
    chk.set_defaults(func=cmd_check_config)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    rc: int = args.func(args)
    return rc


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
