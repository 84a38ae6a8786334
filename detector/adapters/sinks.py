"""Where records go: journald (python-systemd) or a JSON-lines file. The only module that imports systemd."""

from __future__ import annotations

import os
from typing import Protocol

from portsentinel import record as R

JOURNAL_SOCKET = "/run/systemd/journal/socket"


class Sink(Protocol):
    name: str

    def write(self, record: R.Record) -> None: ...

    def reopen(self) -> None: ...

    def close(self) -> None: ...


class JournalSink:
    """One journald entry per record; the fields are the schema's names."""

    name = "journal"

    def __init__(self) -> None:
        from systemd import journal

        self._send = journal.send

    def write(self, record: R.Record) -> None:
        fields = R.to_journal_fields(record)
        message = fields.pop(R.F_MESSAGE)
        self._send(message, **fields)

    def reopen(self) -> None:
        pass

    def close(self) -> None:
        pass


class JsonLinesSink:
    """Appends one JSON object per line, each written whole with one write() and synced.

    The file is created with mode 0640. A rotated file (the path now names another inode, or nothing) is
    noticed at the next record and a new one opened, so logrotate needs no signal (SIGHUP also reopens).
    """

    name = "jsonl"

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd = -1
        self._ino: tuple[int, int] = (0, 0)
        self._open()

    def _open(self) -> None:
        parent = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(parent, mode=0o750, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        st = os.fstat(fd)
        if st.st_mode & 0o777 != 0o640 and st.st_size == 0:
            os.fchmod(fd, 0o640)
        self._fd = fd
        self._ino = (st.st_dev, st.st_ino)

    def _rotated(self) -> bool:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return True
        return (st.st_dev, st.st_ino) != self._ino

    def write(self, record: R.Record) -> None:
        if self._rotated():
            self.reopen()
        data = R.to_json_line(record).encode("ascii")
        written = os.write(self._fd, data)
        if written != len(data):  # pragma: no cover - a regular file takes the whole line or fails
            raise OSError(f"{self.path}: short write ({written} of {len(data)} bytes)")
        os.fdatasync(self._fd)

    def reopen(self) -> None:
        old = self._fd
        self._open()
        if old >= 0:
            os.close(old)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def journal_available(socket_path: str = JOURNAL_SOCKET) -> bool:
    """A journald is listening (its socket exists and accepts a datagram connect)."""
    import socket
    import stat

    try:
        if not stat.S_ISSOCK(os.stat(socket_path).st_mode):
            return False
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.connect(socket_path)
        return True
    except OSError:
        return False


def open_sink(output: str, jsonl_path: str) -> Sink:
    """The sink for ``output`` (journal, jsonl, or auto)."""
    if output == "journal" or (output == "auto" and journal_available()):
        return JournalSink()
    return JsonLinesSink(jsonl_path)


class Waker:
    """A data-less datagram to the responder's wake socket after each alert record, so it reads the journal at
    once instead of waiting for journald's coalesced reader notification (~250 ms). Never blocks, never fails."""

    def __init__(self, path: str) -> None:
        import socket

        self.path = path
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)

    def send(self) -> None:
        if not self.path:
            return
        try:
            self._sock.sendto(b"", self.path)
        except OSError:
            pass  # no responder listening, or its queue is full: it will read the record anyway

    def close(self) -> None:
        self._sock.close()
