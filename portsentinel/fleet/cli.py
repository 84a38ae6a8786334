"""``portsentinel-fleet``: the fleet daemon's entry point (docs/fleet.md)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence

from portsentinel.common.sdnotify import notify

from .config import DEFAULT_PATH, ConfigError, load


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="portsentinel-fleet",
                                description="share bans between hosts over a NATS JetStream key-value bucket")
    p.add_argument("--config", metavar="FILE", default=DEFAULT_PATH,
                   help=f"fleet.conf (fleet.local beside it overrides; default {DEFAULT_PATH})")
    p.add_argument("--check", action="store_true", help="validate the configuration, print it, and exit")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, stream=sys.stderr,
                        format="portsentinel-fleet: %(levelname)s: %(message)s")
    try:
        cfg = load(args.config)
    except ConfigError as exc:
        for line in exc.errors:
            print(line, file=sys.stderr)
        return 2
    if args.check:
        print(f"{', '.join(cfg.sources)}: ok; host {cfg.host or '(none)'}, servers {', '.join(cfg.servers)}, "
              f"{'enabled' if cfg.enabled else 'disabled'}")
        return 0
    if not cfg.enabled:
        print(f"{cfg.sources[-1]}: the fleet is disabled (enabled = false); nothing to do", file=sys.stderr)
        notify("READY=1", "STATUS=disabled in fleet.conf")  # under systemd: a clean start and stop, not a failure
        return 0
    from .service import FleetService

    try:
        service = FleetService(cfg)
    except (OSError, ValueError) as exc:
        print(f"portsentinel-fleet: cannot start: {exc}", file=sys.stderr)
        return 1
    asyncio.run(service.run())
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
