"""sd_notify for the responder (READY, STOPPING, STATUS, WATCHDOG); a no-op outside systemd."""

from __future__ import annotations

import os
import socket


def notify(*states: str) -> None:
    path = os.environ.get("NOTIFY_SOCKET", "")
    if not path:
        return
    addr = "\0" + path[1:] if path.startswith("@") else path
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.sendto("\n".join(states).encode(), addr)
    except OSError:
        pass
