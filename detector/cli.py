"""portsentinel-detector: the command line. One typed config; the options only override its fields."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from portsentinel import __version__
from portsentinel import record as R

from .config.model import ConfigError, DetectorConfig

log = logging.getLogger("portsentinel.detector")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="portsentinel-detector",
        description="Watch ports the way PortSentry does (tcp, udp, stcp, sudp, atcp, audp) and write one "
                    "structured record per decision to journald or a JSON-lines file.",
    )
    p.add_argument("--config", metavar="FILE",
                   help="configuration file: portsentinel's own format or a classic portsentry.conf "
                        "(recognised by its content); without it, the embedded default")
    p.add_argument("--mode", metavar="MODE[,MODE...]",
                   help="sentries to run, overriding the file: " + ", ".join(R.MODES))
    p.add_argument("--interface", metavar="IFACE", help="interface the stealth sentries watch ('any' for all)")
    p.add_argument("--output", choices=("journal", "jsonl", "auto"),
                   help="where records go (auto: journald when it runs, else the JSON-lines file)")
    p.add_argument("--jsonl", metavar="PATH", help="the JSON-lines file")
    p.add_argument("--wake", metavar="PATH",
                   help="the responder's wake socket, nudged after each alert (default /run/portsentinel/wake.sock)")
    p.add_argument("--rearm", metavar="PATH",
                   help="the detector's re-arm socket, where the responder names sources whose ban ended "
                        "(default /run/portsentinel-detector/rearm.sock; empty: off)")
    p.add_argument("--check", action="store_true", help="validate the configuration, print what would run, exit")
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"),
                   help="level of the human-readable log on stderr (default: info)")
    p.add_argument("--version", action="version", version=f"portsentinel-detector {__version__}")
    return p


def load(args: argparse.Namespace) -> tuple[DetectorConfig, list[str]]:
    """The configuration the options describe (raises ConfigError)."""
    warnings: list[str] = []
    if args.config:
        from .config.files import load_config

        cfg, warnings = load_config(args.config)
    else:
        cfg = DetectorConfig()
    if args.mode:
        modes = tuple(m.strip() for m in args.mode.split(",") if m.strip())
        bad = [m for m in modes if m not in R.MODES]
        if bad or not modes or len(set(modes)) != len(modes):
            raise ConfigError("--mode", 0, "mode", f"expected distinct modes among {', '.join(R.MODES)}, "
                                                  f"got {args.mode!r}")
        cfg.modes = modes
    if args.interface:
        cfg.interface = args.interface
    if args.output:
        cfg.output = args.output
    if args.jsonl:
        cfg.jsonl_path = args.jsonl
    if args.wake is not None:
        cfg.wake_socket = args.wake
    if args.rearm is not None:
        cfg.rearm_socket = args.rearm
    return cfg, warnings


def describe(cfg: DetectorConfig) -> str:
    from .service import ranges_text

    lines = [f"configuration: {cfg.source or '(embedded default)'} ({cfg.source_format})",
             f"modes: {', '.join(cfg.modes)}; interface: {cfg.interface}; output: {cfg.output}"
             + (f" ({cfg.jsonl_path})" if cfg.output != "journal" else "")]
    for mode in cfg.modes:
        if mode == "aproto":
            lines.append(f"  aproto: IP protocols without a handler on this host, reported at "
                         f"{cfg.proto_trigger + 1} distinct ones"
                         + (f"; never counted: {ranges_text(list(cfg.proto_exclude))}" if cfg.proto_exclude else ""))
            continue
        proto = "udp" if mode.endswith("udp") else "sctp" if mode.endswith("sctp") else "tcp"
        lines.append(f"  {mode}: {proto} ports {ranges_text(cfg.watched_ports(proto, mode))}")
    lines.append(f"scan_trigger {cfg.scan_trigger}, window {cfg.window:g}s, summary every "
                 f"{cfg.summary_interval:g}s, at most {cfg.max_sources} sources")
    lines.append("never reported: " + ", ".join(str(n) for n in cfg.ignore)
                 + (" and this host's own addresses" if cfg.ignore_self else ""))
    for key, value in cfg.responder_keys.items():
        lines.append(f"responder key {key}={value!r} (read by portsentinel-responder)")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="portsentinel-detector: %(levelname)s: %(message)s")
    try:
        cfg, warnings = load(args)
    except ConfigError as exc:
        print(f"portsentinel-detector: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"portsentinel-detector: error: {exc.filename or ''}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    for w in warnings:
        log.warning("%s", w)
    if args.check:
        print(describe(cfg))
        print("configuration OK")
        return 0
    from .service import Detector

    try:
        det = Detector(cfg, reload=lambda: load(args)[0])
        det.start()
    except OSError as exc:
        print(f"portsentinel-detector: error: {exc}", file=sys.stderr)
        return 1
    det.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
