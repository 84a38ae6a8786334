"""journald, for writing: is one running, and a typed sender of records. The only module of
``portsentinel.common`` and of the detector that imports python-systemd (which is untyped)."""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import Callable, Iterable, Mapping

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
    """One journald entry per record; the fields are the schema's names, MESSAGE the record's message.

    Entries go through python-systemd's ``sendv`` with exactly the record's fields: its ``send`` would also walk
    the caller's stack (and read its source file) for CODE_FILE/CODE_LINE/CODE_FUNC on every entry, which cost
    about 0.1 ms per record, the largest part of writing one."""

    name = "journal"

    def __init__(self) -> None:
        from systemd import journal

        self._sendv: Callable[..., None] = journal.sendv

    def write(self, record: R.Record, repeated: Mapping[str, Iterable[str]] | None = None) -> None:
        """Write one entry; ``repeated`` {NAME: values} adds the field NAME once per value (journald keeps every
        value of a field that repeats, and ``journalctl NAME=VALUE`` finds the entry by any of them)."""
        args = [f"{name}={value}" for name, value in R.to_journal_fields(record).items()]
        for name, values in (repeated or {}).items():
            args.extend(f"{name}={value}" for value in values)
        self._sendv(*args)

    def flush(self) -> None:
        """Nothing to do: journald has each entry when write() returns."""

    def reopen(self) -> None:
        pass

    def close(self) -> None:
        pass
