"""portsentinel-responder: follow alert records and act on them per jail."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from portsentinel import __version__
from portsentinel.common import paths


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="portsentinel-responder",
        description="Follow portsentinel-detector's records (journald or JSON lines) and other logs, and act "
                    "on them per jail: jail.conf, filter.d/, actions.d/.")
    p.add_argument("--config-dir", metavar="DIR", type=Path, default=None,
                   help="directory with jail.conf, filter.d/, actions.d/ (default: /etc/portsentinel, else the "
                        "project's own)")
    p.add_argument("--state-dir", metavar="DIR", type=Path, default=Path(paths.STATE_DIR),
                   help="where bans and cursors are kept (sqlite; default /var/lib/portsentinel)")
    p.add_argument("--socket", metavar="PATH", default=paths.CONTROL_SOCKET,
                   help="control socket for the portsentinel client (default /run/portsentinel/responder.sock)")
    p.add_argument("--backend", choices=("systemd", "pyinotify", "auto"), default="auto",
                   help="where records come from: the journal, files followed with inotify, or auto (the "
                        "journal when one is readable)")
    p.add_argument("--wake", metavar="PATH", default=paths.WAKE_SOCKET,
                   help="wake socket the detector nudges after each alert (default /run/portsentinel/wake.sock)")
    p.add_argument("--rearm", metavar="PATH", default=paths.REARM_SOCKET,
                   help="the detector's re-arm socket, told which bans ended so a returning scanner is reported "
                        "anew (default /run/portsentinel-detector/rearm.sock; empty: off)")
    p.add_argument("--fleet-wake", metavar="PATH", default=paths.FLEET_WAKE_SOCKET,
                   help="the fleet daemon's wake socket, nudged after each shared decision (default "
                        "/run/portsentinel-fleet/wake; nobody there: nothing happens; empty: off)")
    p.add_argument("--decisions", metavar="PATH", default=paths.DECISIONS_JSONL,
                   help="JSON-lines file for decisions where no journald runs")
    p.add_argument("--group", metavar="GROUP", default="", help="group allowed on the control socket (besides root)")
    p.add_argument("--metrics-listen", metavar="HOST:PORT", type=_listen, default="",
                   help="serve Prometheus /metrics there ([V6]:PORT, or PORT on 127.0.0.1); default off")
    p.add_argument("--metrics-textfile", metavar="PATH", default="",
                   help="write the metrics to this node_exporter textfile (*.prom, renamed into place); default off")
    p.add_argument("--metrics-interval", metavar="SECONDS", type=_seconds, default=10.0,
                   help="seconds between textfile writes (default 10)")
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    p.add_argument("--version", action="version", version=f"portsentinel-responder {__version__}")
    return p


def _listen(text: str) -> str:
    from portsentinel.common.values import listen as parse_listen

    try:
        if text:  # empty: off
            parse_listen(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _seconds(text: str) -> float:
    from portsentinel.common.values import duration

    try:
        return duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def default_config_dir() -> Path:
    etc = Path(paths.CONFIG_DIR)
    if (etc / "jail.conf").exists():
        return etc
    return Path(__file__).resolve().parent.parent


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="portsentinel-responder: %(levelname)s: %(message)s")
    from portsentinel.responder.service import Options, Responder

    opts = Options(config_dir=args.config_dir or default_config_dir(), state_dir=args.state_dir,
                   socket=args.socket, backend=args.backend, wake=args.wake, control_group=args.group,
                   decisions_jsonl=args.decisions, rearm=args.rearm, fleet_wake=args.fleet_wake,
                   metrics_listen=args.metrics_listen, metrics_textfile=args.metrics_textfile,
                   metrics_interval=args.metrics_interval)
    try:
        r = Responder(opts)
        r.start()
    except (OSError, ValueError) as exc:
        print(f"portsentinel-responder: error: {exc}", file=sys.stderr)
        return 1
    r.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
