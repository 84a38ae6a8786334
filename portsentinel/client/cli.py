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

from portsentinel.common import paths

from . import fleet_cmd


def _script(name: str) -> str:
    """A sibling console script (same venv or prefix as this one), else the name for PATH lookup."""
    here = Path(sys.argv[0]).resolve().parent if sys.argv and sys.argv[0] else None
    if here and (here / name).exists():
        return str(here / name)
    return name


def run_argv(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """The responder's and the detector's command lines for ``portsentinel run``: every path either daemon
    takes can be given, and a path both use (wake and re-arm sockets) goes to both, so that several pipelines
    can run side by side."""
    det = [_script("portsentinel-detector")]
    for opt, value in (("--config", args.config), ("--mode", args.mode), ("--interface", args.interface),
                       ("--output", args.output), ("--jsonl", args.jsonl), ("--wake", args.wake),
                       ("--rearm", args.rearm)):
        if value is not None:
            det += [opt, value]
    responder = [_script("portsentinel-responder"), "--backend", args.backend or "auto", "--socket", args.socket]
    for opt, value in (("--config-dir", args.config_dir), ("--state-dir", args.state_dir), ("--wake", args.wake),
                       ("--rearm", args.rearm), ("--decisions", args.decisions)):
        if value is not None:
            responder += [opt, value]
    return responder, det


def cmd_run(args: argparse.Namespace) -> int:
    """Detector and responder in the foreground; Ctrl-C or SIGTERM stops both."""
    responder, det_argv = run_argv(args)
    procs = [subprocess.Popen(responder), subprocess.Popen(det_argv)]

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
    from portsentinel.responder.adapters.control import request

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
        if a.get("pending_unbans"):
            print(f"{a['pending_unbans']} unban(s) pending (retried until every action succeeds)")
        health = a.get("health") or {}
        if health.get("last_reapply"):
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(health["last_reapply"]))
            print(f"firewall lost bans {health['reapplied_total']} time(s); last re-applied at {when}: "
                  f"{health['last_reapply_detail']}")
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
            extra = " ".join(f"{k}={b[k]}" for k in ("proto", "port", "scan", "origin", "origins") if k in b)
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
    if args.fleet and (args.all or not args.ip):
        print("portsentinel: unban --fleet needs one address (or network), not --all", file=sys.stderr)
        return 2
    if args.fleet:
        from portsentinel import record as R

        try:
            R.canonical_network(args.ip.strip())
        except ValueError as exc:
            print(f"portsentinel: unban --fleet: {exc}", file=sys.stderr)
            return 2
    req = {"cmd": "unban", "ip": args.ip or "", "all": bool(args.all)}
    a = _ask(args, {**req, "fleet": True} if args.fleet else req)
    if a is not None and not args.json:
        for b in a["unbanned"]:
            print(f"unbanned {b['ip']} in {b['jail']}")
        if args.fleet:
            print(f"fleet-wide unban of {a['fleet']} handed to the fleet daemon")
    return 0 if a is not None else 1


def cmd_reload(args: argparse.Namespace) -> int:
    a = _ask(args, {"cmd": "reload"})
    if a is not None and not args.json:
        for err in a.get("errors", []):
            print(f"error: {err}")
        print("reloaded")
    return 0 if a is not None else 1


def _config_dir(args: argparse.Namespace) -> Path:
    if args.config_dir:
        return Path(args.config_dir)
    from portsentinel.responder.cli import default_config_dir

    return default_config_dir()


def cmd_check_config(args: argparse.Namespace) -> int:
    """Every error of the detector's config and of every jail, filter and action, with file:line:key."""
    from portsentinel.detector.config.files import load_config
    from portsentinel.detector.config.model import ConfigError, DetectorConfig
    from portsentinel.responder.actions.action import load_action
    from portsentinel.responder.config.inifile import IniError
    from portsentinel.responder.config.jailconf import load
    from portsentinel.responder.filter.filters import load_filter
    from portsentinel.responder.trap import settings as S

    errors: list[str] = []
    det: DetectorConfig | None = None
    if args.config:
        try:
            det, warnings = load_config(args.config)
            for w in warnings:
                print(f"warning: {w}")
            print(f"detector: {args.config}: OK")
        except (ConfigError, OSError) as exc:
            errors.append(f"detector: {exc}")
    else:
        det = DetectorConfig()
        print("detector: embedded default: OK")
    if det is not None:
        print(f"  modes {', '.join(det.modes)}; sources counted per /{det.ipv4_prefix} (IPv4) and "
              f"/{det.ipv6_prefix} (IPv6)")
    cdir = _config_dir(args)
    try:
        cfg = load(cdir)
    except IniError as exc:
        errors.append(str(exc))
        cfg = None
    if cfg is not None:
        errors += cfg.errors
        for jail in cfg.jails:
            problems = []
            try:
                load_filter(cdir / "filter.d", jail.filter, jail.filter_args)
            except ValueError as exc:
                problems.append(str(exc))
            traps: list[str] = []
            for ref in jail.actions:
                try:
                    action = load_action(cdir / "actions.d", (ref.name, ref.args), jail.name)
                except ValueError as exc:
                    problems.append(str(exc))
                    continue
                if action.options.get(S.MARKER, "").strip().lower() in ("yes", "1", "true"):
                    try:
                        traps.append(S.describe(S.settings_from(action.params, jail.name, jail.ignoreip,
                                                                prefix4=jail.ban_prefix_v4,
                                                                prefix6=jail.ban_prefix_v6), jail.maxretry))
                    except ValueError as exc:
                        problems.append(f"{ref.where}: {jail.name}: action {ref.name}: {exc}")
            errors += problems
            state = "OK" if not problems else f"{len(problems)} error(s)"
            print(f"jail {jail.name}: filter {jail.filter}, actions "
                  f"{', '.join(a.name for a in jail.actions) or '(none)'}, backend {jail.backend}: {state}")
            esc = (f"; {jail.ban_prefix_v6_escalate_after} of one /{jail.ban_prefix_v6_escalate} within "
                   f"{int(jail.ban_prefix_v6_escalate_window)}s: the /{jail.ban_prefix_v6_escalate}"
                   if jail.ban_prefix_v6_escalate else "")
            print(f"  bans per /{jail.ban_prefix_v4} (IPv4) and /{jail.ban_prefix_v6} (IPv6){esc}")
            if jail.share:
                print("  shares its bans and unbans with the fleet (share = true)")
            if jail.fleet:
                mults = " ".join(f"{m:g}" for m in jail.bantime_fleetmultipliers)
                print(f"  the fleet's jail: remote bans from {jail.logpath or '(default file)'} (owner uid "
                      f"{jail.file_owner}), bantime x {mults} by origins, at most {int(jail.bantime_maxtime)}s")
            for line in traps:
                print(f"  {line}")
        if cfg.disabled:
            print(f"disabled jails: {', '.join(cfg.disabled)}")
    errors += _check_fleet(args, cdir)
    for err in errors:
        print(f"error: {err}", file=sys.stderr)
    print(f"{len(errors)} error(s) in {cdir}" if errors else f"configuration OK ({cdir})")
    return 1 if errors else 0


def _check_fleet(args: argparse.Namespace, cdir: Path) -> list[str]:
    """fleet.conf (< fleet.local): --fleet-config, else the one in the config dir when there is one."""
    from portsentinel.fleet.config import ConfigError, describe, load

    if args.no_fleet:
        return []
    path = Path(args.fleet_config) if args.fleet_config else cdir / "fleet.conf"
    if not args.fleet_config and not path.exists():
        return []
    try:
        print(describe(load(str(path))))
    except ConfigError as exc:
        return [f"fleet: {e}" for e in exc.errors]
    return []


def cmd_test_filter(args: argparse.Namespace) -> int:
    """Run a filter over a log file, a JSON-lines file, or journal entries, like fail2ban-regex."""
    from portsentinel import record as R
    from portsentinel.responder.config.inifile import parse_args_spec, read_layered
    from portsentinel.responder.filter.filters import filter_from_ini, load_filter
    from portsentinel.responder.filter.testfilter import format_summary, run_lines, run_records, to_json

    try:
        fname, fargs = parse_args_spec(args.filter)
        if fname.endswith(".conf") or "/" in fname:
            flt = filter_from_ini(read_layered(Path(fname)), Path(fname).stem, fargs)
        else:
            flt = load_filter(_config_dir(args) / "filter.d", fname, fargs)
    except (ValueError, OSError) as exc:
        print(f"portsentinel: {exc}", file=sys.stderr)
        return 2
    source = args.source
    path = Path(source)
    if path.exists():
        with open(path, encoding="utf-8", errors="replace") as fh:
            first = fh.readline()
            fh.seek(0)
            if first.lstrip().startswith("{"):
                records: list[dict[str, str]] = []
                for number, line in enumerate(fh, start=1):
                    if not line.strip():
                        continue
                    try:
                        records.append(dict(R.from_json_line(line).fields))
                    except R.RecordError as exc:
                        print(f"warning: {path}:{number}: {exc}", file=sys.stderr)
                result = run_records(flt, records, source=str(path), keep=args.keep)
            else:
                result = run_lines(flt, fh, now=time.time(), source=str(path), keep=args.keep)
    elif "=" in source:
        proc = subprocess.run(["journalctl", "--no-pager", "-o", "json", *source.split()],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"portsentinel: journalctl: {proc.stderr.strip()}", file=sys.stderr)
            return 2
        recs = []
        for line in proc.stdout.splitlines():
            obj = json.loads(line)
            recs.append({k: v for k, v in obj.items() if isinstance(v, str)})
        result = run_records(flt, recs, source=f"journal {source}", keep=args.keep)
    else:
        print(f"portsentinel: {source}: no such file, and not a journal match (FIELD=value)", file=sys.stderr)
        return 2
    print(to_json(result) if args.json else format_summary(result, show=tuple(args.show)))
    return 0


def cmd_import_portsentry(args: argparse.Namespace) -> int:
    """Print jails equivalent to a classic portsentry.conf's KILL_* and BLOCK_* keys."""
    from portsentinel.responder.config.portsentry import PortsentryImportError, convert

    try:
        text = Path(args.file).read_text(encoding="utf-8", errors="replace")
        print(convert(text, args.file, bantime=args.bantime), end="")
    except (OSError, PortsentryImportError) as exc:
        print(f"portsentinel: {exc}", file=sys.stderr)
        return 2
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """Scans and bans over a time range, from the journal or the JSON-lines files (docs/metrics.md)."""
    from .report_cmd import run

    return run(args.since, args.html, args.jsonl, args.buckets, top=args.top)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="portsentinel", description="Port-scan detection and response.")
    p.add_argument("--socket", metavar="PATH", default=paths.CONTROL_SOCKET,
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
    ub.add_argument("--fleet", action="store_true",
                    help="lift it on every host of the fleet too (docs/fleet.md): lifted here from every jail, and "
                         "the fleet daemon publishes the fleet-wide unban")
    ub.set_defaults(func=cmd_unban)
    sub.add_parser("reload", help="re-read jail.conf, filters and actions").set_defaults(func=cmd_reload)
    run = sub.add_parser("run", help="run detector and responder in the foreground (embedded default config)")
    run.add_argument("--config", metavar="FILE", help="detector configuration file")
    run.add_argument("--mode", metavar="MODE[,MODE...]", help="the detector's sentries (overrides the file)")
    run.add_argument("--interface", metavar="IFACE", help="interface the detector's stealth sentries watch")
    run.add_argument("--output", choices=("journal", "jsonl", "auto"), help="where the detector's records go")
    run.add_argument("--jsonl", metavar="PATH", help="the JSON-lines file")
    run.add_argument("--config-dir", metavar="DIR", help="responder configuration (default: /etc/portsentinel, "
                                                         "else the project's own)")
    run.add_argument("--state-dir", metavar="DIR", help="responder state (default /var/lib/portsentinel)")
    run.add_argument("--backend", choices=("systemd", "pyinotify", "auto"),
                     help="where the responder reads records (default auto)")
    run.add_argument("--decisions", metavar="PATH", help="the responder's JSON-lines decisions file")
    run.add_argument("--wake", metavar="PATH", help="the responder's wake socket (both daemons)")
    run.add_argument("--rearm", metavar="PATH", help="the detector's re-arm socket (both daemons)")
    run.add_argument("--socket", metavar="PATH", default=argparse.SUPPRESS,
                     help="the responder's control socket (the same as portsentinel --socket)")
    run.set_defaults(func=cmd_run)
    chk = sub.add_parser("check-config", help="validate detector and responder configuration (file:line:key)")
    chk.add_argument("--config", metavar="FILE", help="detector configuration file")
    chk.add_argument("--config-dir", metavar="DIR", help="responder configuration (jail.conf, filter.d, actions.d)")
    chk.add_argument("--fleet-config", metavar="FILE",
                     help="the fleet daemon's fleet.conf (default: DIR/fleet.conf when there is one)")
    chk.add_argument("--no-fleet", action="store_true",
                     help="leave fleet.conf out (the responder's unit: a fleet typo must not stop the responder)")
    chk.set_defaults(func=cmd_check_config)
    tf = sub.add_parser("test-filter", help="what a filter matches in a log, a JSON-lines file or the journal")
    tf.add_argument("filter", help="filter name in filter.d (NAME or NAME[key=value]) or a path to a .conf")
    tf.add_argument("source", help="a log file, a JSON-lines file, or a journal match such as "
                                   "'SYSLOG_IDENTIFIER=portsentinel-detector'")
    tf.add_argument("--config-dir", metavar="DIR", help="where filter.d is")
    tf.add_argument("--show", action="append", default=[], choices=("matched", "ignored", "missed"),
                    help="also print these entries (repeatable)")
    tf.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                    help="print one JSON document (docs/filters.md)")
    tf.add_argument("--keep", type=int, default=1000, metavar="N",
                    help="keep at most N entries in the output (default 1000; counts are always complete)")
    tf.add_argument("--all", dest="keep", action="store_const", const=None,
                    help="keep every entry in the output")
    tf.set_defaults(func=cmd_test_filter)
    rp = sub.add_parser("report", help="scans and bans over time, top sources, ports, bans by jail and action: "
                                       "a terminal table with sparklines, or one self-contained HTML file")
    rp.add_argument("--since", default="24h", metavar="DURATION", help="how far back (default 24h; 30m, 7d …)")
    rp.add_argument("--html", metavar="FILE", help="also write the report as one HTML file with charts")
    rp.add_argument("--jsonl", metavar="FILE", action="append",
                    help="read these JSON-lines files (the detector's alerts, the responder's decisions; "
                         "repeatable) instead of the journal")
    rp.add_argument("--buckets", type=int, default=24, choices=range(2, 241), metavar="N",
                    help="time intervals in the charts (default 24)")
    rp.add_argument("--top", type=int, default=10, metavar="N", help="sources and list entries shown (default 10)")
    rp.set_defaults(func=cmd_report)
    ip = sub.add_parser("import-portsentry",
                        help="print jails equivalent to a classic portsentry.conf (KILL_ROUTE, KILL_HOSTS_DENY, "
                             "KILL_RUN_CMD, BLOCK_TCP/UDP), e.g. > /etc/portsentinel/jail.d/portsentry.local")
    ip.add_argument("file", help="the portsentry.conf")
    ip.add_argument("--bantime", default="-1", help="bantime of the jails (default -1: forever, as PortSentry)")
    ip.set_defaults(func=cmd_import_portsentry)
    fleet_cmd.add_parser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    rc: int = args.func(args)
    return rc


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
