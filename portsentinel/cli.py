"""portsentinel: the client. `run` starts the pipeline in the foreground; the rest talk to the responder."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any


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


def _ask(args: argparse.Namespace, req: dict[str, Any]) -> dict[str, Any] | None:
    from responder.adapters.control import request

    try:
        answer = request(args.socket, req)
    except (OSError, ValueError) as exc:
        print(f"portsentinel: cannot reach the responder at {args.socket}: {exc}", file=sys.stderr)
        return None
    if args.json:
        print(json.dumps(answer, indent=2, sort_keys=True))
    if not answer.get("ok"):
        if not args.json:
            print(f"portsentinel: {answer.get('error', 'failed')}", file=sys.stderr)
        return None
    return answer


def _fmt_time(seconds: float) -> str:
    if seconds < 0:
        return "forever"
    s = int(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m{s % 60:02d}s" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def cmd_status(args: argparse.Namespace) -> int:
    a = _ask(args, {"cmd": "status", "jail": args.jail or ""})
    if a is None:
        return 1
    if not args.json:
        print(f"uptime {a['uptime']}s, {a['banned']} ban(s) in force, {len(a['jails'])} jail(s)")
        for name, j in a["jails"].items():
            print(f"jail {name}: source {j['source']}, filter {j['filter']}, actions {', '.join(j['actions'])}")
            print(f"  failures {j['failures']} (tracked {j['tracked']}), banned now {j['banned']}, "
                  f"bans total {j['bans_total']}, ignored {j['ignored_total']}, over cap {j['cap_refused']}")
        for err in a.get("errors", []):
            print(f"error: {err}")
    return 0


def cmd_banned(args: argparse.Namespace) -> int:
    a = _ask(args, {"cmd": "banned"})
    if a is None:
        return 1
    if not args.json:
        for b in a["bans"]:
            extra = " ".join(f"{k}={b[k]}" for k in ("proto", "port", "scan") if k in b)
            print(f"{b['jail']}\t{b['ip']}\t{_fmt_time(b['remaining'])}\toffence {b['count']}\t{extra}".rstrip())
    return 0


def cmd_ban(args: argparse.Namespace) -> int:
    a = _ask(args, {"cmd": "ban", "jail": args.jail, "ip": args.ip})
    if a is not None and not args.json:
        print(f"banned {a['banned']} in {a['jail']}")
    return 0 if a is not None else 1


def cmd_unban(args: argparse.Namespace) -> int:
    if not args.all and not args.ip:
        print("portsentinel: unban needs an address or --all", file=sys.stderr)
        return 2
    a = _ask(args, {"cmd": "unban", "ip": args.ip or "", "all": bool(args.all)})
    if a is not None and not args.json:
        for b in a["unbanned"]:
            print(f"unbanned {b['ip']} in {b['jail']}")
    return 0 if a is not None else 1


def cmd_reload(args: argparse.Namespace) -> int:
    a = _ask(args, {"cmd": "reload"})
    if a is not None and not args.json:
        for err in a.get("errors", []):
            print(f"error: {err}")
        print("reloaded")
    return 0 if a is not None else 1


def cmd_check_config(args: argparse.Namespace) -> int:
    argv = [_script("portsentinel-detector"), "--check"]
    if args.config:
        argv += ["--config", args.config]
    return subprocess.run(argv).returncode


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="portsentinel", description="Port-scan detection and response.")
    p.add_argument("--socket", metavar="PATH", default="/run/portsentinel/responder.sock",
                   help="the responder's control socket")
    p.add_argument("--json", action="store_true", help="print the responder's answer as JSON")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    st = sub.add_parser("status", help="the responder's jails and counters")
    st.add_argument("jail", nargs="?", help="one jail only")
    st.set_defaults(func=cmd_status)
    sub.add_parser("banned", help="bans in force with their remaining time").set_defaults(func=cmd_banned)
    bn = sub.add_parser("ban", help="ban an address in a jail (runs the jail's actions)")
    bn.add_argument("jail")
    bn.add_argument("ip")
    bn.set_defaults(func=cmd_ban)
    ub = sub.add_parser("unban", help="lift the bans of an address (or --all)")
    ub.add_argument("ip", nargs="?")
    ub.add_argument("--all", action="store_true", help="lift every ban")
    ub.set_defaults(func=cmd_unban)
    sub.add_parser("reload", help="re-read jail.conf, filters and actions").set_defaults(func=cmd_reload)
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
