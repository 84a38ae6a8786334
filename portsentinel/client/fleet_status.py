"""``portsentinel fleet status``: what the fleet daemon last wrote to its status file (no NATS needed)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

DEFAULT_STATUS = "/run/portsentinel-fleet/status.json"


def add_status_parser(fleet_sub: Any) -> argparse.ArgumentParser:
    """Register ``status`` on the ``fleet`` command's subparsers."""
    st: argparse.ArgumentParser = fleet_sub.add_parser(
        "status", help="the fleet daemon's link: servers, connection, last sequence, lag, bans by origin, spool")
    st.add_argument("--status-file", metavar="PATH", default=DEFAULT_STATUS,
                    help=f"the daemon's status file (fleet.conf status; default {DEFAULT_STATUS})")
    st.set_defaults(func=cmd_fleet_status)
    return st


def cmd_fleet_status(args: argparse.Namespace) -> int:
    from portsentinel.fleet.status import STALE, format_status, read

    try:
        data = read(args.status_file)
    except (OSError, ValueError) as exc:
        print(f"portsentinel fleet status: cannot read {args.status_file}: {exc} (is portsentinel-fleet running?)",
              file=sys.stderr)
        return 3
    if getattr(args, "json", False):
        print(json.dumps(data, indent=2, sort_keys=True))
    else:
        print(format_status(data))
    fresh = time.time() - float(data.get("time", 0)) <= STALE
    return 0 if data.get("connected") and fresh and not data.get("output_error") else 1
