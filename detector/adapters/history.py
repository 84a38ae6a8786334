"""PortSentry's history file (HISTORY_FILE, ``history_file``): one line per scan record, appended.

The line keeps PortSentry's shape, so scripts that read portsentry.history keep working::

    1700000000 - 11/14/2023 22:13:20 Host: 198.51.100.7/198.51.100.7 Port: 143 TCP Detected scan: syn

The file is opened for each line (O_APPEND, created 0640): a rotated or removed file is simply written anew.
A failure is logged, never raised: a full disk must not stop the sentry.
"""

from __future__ import annotations

import logging
import os
import time

from portsentinel import record as R

log = logging.getLogger("portsentinel.detector")


def history_line(record: R.Record, wall: float) -> str:
    """The history line for a scan record seen at ``wall`` (seconds since the epoch; local time in the text)."""
    return (f"{int(wall)} - {time.strftime('%m/%d/%Y %H:%M:%S', time.localtime(wall))} Host: "
            f"{record.src}/{record.src} Port: {record.get(R.F_PORT)} {record.get(R.F_PROTO).upper()} Detected "
            f"scan: {record.get(R.F_SCAN)}\n")


class HistoryFile:
    def __init__(self, path: str) -> None:
        self.path = path

    def write(self, record: R.Record, wall: float) -> None:
        """Append the line of a scan record; other records are not history."""
        if record.event != R.Event.SCAN.value:
            return
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
            try:
                os.write(fd, history_line(record, wall).encode("ascii", "replace"))
            finally:
                os.close(fd)
        except OSError as exc:
            log.error("history file %s: %s", self.path, exc)
