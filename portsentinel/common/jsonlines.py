"""The JSON-lines transport's writer: one record per line, for both stages.

The file is created with mode 0640 (its directory 0750), each line goes out whole in one ``write()``, and a
file that logrotate moved away (the path now names another inode, or nothing) is noticed at the next record
and a new one opened, so no signal is needed. ``sync=True`` makes every record durable before ``write``
returns (the detector: one alert matters); with ``sync=False`` the caller calls :meth:`flush` once per batch
(the responder writes many decisions at a time).
"""

from __future__ import annotations

import os

from portsentinel import record as R


class JsonLinesWriter:
    name = "jsonl"

    def __init__(self, path: str, *, sync: bool = True) -> None:
        self.path = path
        self.sync = sync
        self._fd = -1
        self._ino: tuple[int, int] = (0, 0)
        self._dirty = False
        #: A write failed after part of a line went out (a full disk): the next write begins with a newline.
        self._torn = False
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
        self._torn = False

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
        if self.sync:
            os.fdatasync(self._fd)
        else:
            self._dirty = True

    def write_many(self, records: list[R.Record]) -> None:
        """Several records in one ``write()`` (one rotation check): a batch of lines lands whole or not at all.
        Not synced: :meth:`flush` after it."""
        if records:
            self.write_lines("".join(R.to_json_line(r) for r in records))

    def write_lines(self, text: str) -> None:
        """Lines already made by ``record.to_json_line`` (or byte for byte like it), in one ``write()``, as
        :meth:`write_many`. Not synced: :meth:`flush` after it."""
        if not text:
            return
        if self._rotated():
            self.reopen()
        data = text.encode("ascii")
        if self._torn:  # an earlier write stopped inside a line: end it, so that line alone is garbage
            data = b"\n" + data
        view = memoryview(data)
        while view:  # a regular file takes it whole; a short write (a full disk) continues or raises
            try:
                written = os.write(self._fd, view)
            except OSError:
                self._torn = self._torn or len(view) < len(data)
                raise
            self._torn = False
            self._dirty = True
            view = view[written:]

    def flush(self) -> None:
        """Make every record written so far durable (one fdatasync for the batch)."""
        if self._dirty and self._fd >= 0:
            os.fdatasync(self._fd)
            self._dirty = False

    def sync_handle(self) -> int:
        """For a caller that makes the lines durable elsewhere (a worker thread): a duplicate of the descriptor
        when something was written since the last sync (the caller fdatasyncs and closes it), else -1. What was
        written before this call is durable once that fdatasync returns, whatever is written or rotated after."""
        if not self._dirty or self._fd < 0:
            return -1
        self._dirty = False
        return os.dup(self._fd)

    def sync_failed(self) -> None:
        """The fdatasync of a :meth:`sync_handle` failed: what was written is to be synced again."""
        self._dirty = True

    def reopen(self) -> None:
        old = self._fd
        if old >= 0 and self._dirty:
            os.fdatasync(old)
            self._dirty = False
        self._open()
        if old >= 0:
            os.close(old)

    def close(self) -> None:
        if self._fd >= 0:
            self.flush()
            os.close(self._fd)
            self._fd = -1
