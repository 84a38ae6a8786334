"""journald, for writing: is one running, and a typed sender of records. The only module of
``portsentinel.common`` and of the detector that imports python-systemd (which is untyped)."""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import Callable

from portsentinel import record as R

from .paths import JOURNAL_SOCKET


def journal_available(socket_path: str = JOURNAL_SOCKET) -> bool:
    """A journald is listening: its socket exists and accepts a datagram connect (a stale socket file of a
    journald that is gone does not count)."""
    try:
        if not stat.S_ISSOCK(os.stat(socket_path).st_mode):
            return False
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.connect(socket_path)
        return True
    except OSError:
        return False


class JournalWriter:
    """One journald entry per record; the fields are the schema's names, MESSAGE the record's message."""

    name = "journal"

    def __init__(self) -> None:
        from systemd import journal

        self._send: Callable[..., None] = journal.send

    def write(self, record: R.Record) -> None:
        fields = R.to_journal_fields(record)
        message = fields.pop(R.F_MESSAGE)
        self._send(message, **fields)

    def flush(self) -> None:
        """Nothing to do: journald has each entry when write() returns."""

    def reopen(self) -> None:
        pass

    def close(self) -> None:
        pass
