"""sd_notify: READY, STOPPING, STATUS and watchdog pings when run by systemd (a no-op otherwise)."""

from __future__ import annotations

import os
import socket


class Notifier:
    def __init__(self) -> None:
        self.path = os.environ.get("NOTIFY_SOCKET", "")
        usec = os.environ.get("WATCHDOG_USEC", "")
        self.watchdog = int(usec) / 2e6 if usec.isdigit() and int(usec) > 0 else 0.0

    def send(self, *states: str) -> None:
        if not self.path:
            return
        addr = "\0" + self.path[1:] if self.path.startswith("@") else self.path
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
                s.sendto("\n".join(states).encode(), addr)
        except OSError:
            pass

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={status}")

    def stopping(self) -> None:
        self.send("STOPPING=1")

    def ping(self) -> None:
        self.send("WATCHDOG=1")
