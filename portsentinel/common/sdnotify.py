"""sd_notify: READY, STOPPING, STATUS and watchdog pings when run by systemd (a no-op otherwise)."""

from __future__ import annotations

import os
import socket


def notify(*states: str) -> None:
    """Send ``states`` (``READY=1``, ``STATUS=…``) to $NOTIFY_SOCKET; silent when there is none or it fails."""
    path = os.environ.get("NOTIFY_SOCKET", "")
    if not path:
        return
    addr = "\0" + path[1:] if path.startswith("@") else path
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.sendto("\n".join(states).encode(), addr)
    except OSError:
        pass


def watchdog_interval() -> float:
    """Seconds between watchdog pings (half of $WATCHDOG_USEC), or 0 when systemd asks for none."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    return int(usec) / 2e6 if usec.isdigit() and int(usec) > 0 else 0.0


class Notifier:
    """The same, as an object a service holds: ``watchdog`` is the ping interval in seconds (0: none)."""

    def __init__(self) -> None:
        self.watchdog = watchdog_interval()

    def send(self, *states: str) -> None:
        notify(*states)

    def ready(self, status: str) -> None:
        notify("READY=1", f"STATUS={status}")

    def stopping(self) -> None:
        notify("STOPPING=1")

    def ping(self) -> None:
        notify("WATCHDOG=1")
