"""The status file the daemon rewrites every second and ``portsentinel fleet status`` reads (no NATS needed).

JSON, written to a temporary file and renamed over the old one (a reader never sees half a file), mode 0644.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

#: A status older than this means the daemon is not running (it rewrites the file every second).
STALE = 10.0


def write(path: str, status: dict[str, Any]) -> None:
    os.makedirs(os.path.dirname(path) or ".", mode=0o755, exist_ok=True)
    tmp = f"{path}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    with os.fdopen(fd, "w") as fh:
        json.dump(status, fh, sort_keys=True)
    os.replace(tmp, path)


def read(path: str) -> dict[str, Any]:
    """The daemon's last status; OSError or ValueError when there is none or it is not JSON."""
    with open(path, encoding="utf-8") as fh:
        data = json.load(fh)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a status object")
    return data


def format_status(status: dict[str, Any], now: float | None = None) -> str:
    """The text `portsentinel fleet status` prints."""
    now = time.time() if now is None else now
    age = now - float(status.get("time", 0))
    lines = [
        f"host:          {status.get('host', '?')}",
        f"servers:       {', '.join(status.get('servers', []))}",
        f"connection:    {'connected to ' + status['server'] if status.get('connected') else 'disconnected'}"
        + (f" (last error: {status['last_error']})" if status.get("last_error") else ""),
        f"last sequence: {status.get('last_seq', 0)} (lag {status.get('lag', 0)})",
        f"watcher:       {status.get('watcher', '?')}, restarted {status.get('watch_restarts', 0)} time(s)",
        f"spool:         {status.get('spool', 0)} waiting, {status.get('spool_dropped', 0)} dropped",
        f"published:     {status.get('published', 0)}",
        "bans by origin:",
    ]
    origins = status.get("bans_by_origin", {})
    lines += [f"  {origin:<20} {count}" for origin, count in sorted(origins.items())] or ["  (none)"]
    refused = status.get("refused", 0)
    if refused:
        lines.append(f"refused:       {refused}")
    forged = status.get("wake_refused", 0)
    if forged:
        lines.append(f"wake-ups refused: {forged} (decisions from another uid than responder_uid, or cut short)")
    if status.get("output_error"):
        lines.insert(0, f"WARNING: cannot write the remote bans for the responder: {status['output_error']} "
                        f"({status.get('output_held', 0)} held, the watch position waits for them)")
    if age > STALE:
        lines.insert(0, f"WARNING: status is {age:.0f}s old: is portsentinel-fleet running?")
    return "\n".join(lines)
