"""Where the publisher reads the responder's decisions: the journal, or its JSON-lines decisions file.

Both follow from a saved cursor (a restart neither republishes old decisions nor misses new ones) and vouch for
the writer the way the responder vouches for the detector: journald's trusted ``_UID`` (pushed down to journald
as a match, so records other users forge never arrive), or the file's owner and mode (a regular file owned by the
responder's uid, not group- or world-writable, checked on the open descriptor at every read). Each read returns
``(fields, cursor)`` pairs; the fleet's wake socket and a short poll say when to read.
"""

from __future__ import annotations

import json
import logging
import os
import stat
from typing import Protocol

from portsentinel import record as R

log = logging.getLogger("portsentinel.fleet")

Decision = tuple[dict[str, str], str]


class DecisionInput(Protocol):
    name: str

    def fileno(self) -> int: ...

    def read(self, limit: int = 4096) -> list[Decision]: ...

    def close(self) -> None: ...


class JournalDecisions:
    """The responder's shared decisions in the journal (``PS_SHARE=1``, written by ``responder_uid``)."""

    def __init__(self, responder_uid: int, cursor: str | None) -> None:
        from portsentinel.common.journal import JournalReader

        self.name = "journal"
        self._reader = JournalReader([{R.F_IDENT: R.RESPONDER_IDENTIFIER, R.F_SHARE: "1",
                                       "_UID": str(responder_uid)}])
        self._reader.seek(cursor)

    def fileno(self) -> int:
        return self._reader.fileno()

    def read(self, limit: int = 4096) -> list[Decision]:
        self._reader.process()
        return self._reader.entries(limit)

    def close(self) -> None:
        self._reader.close()


class FileDecisions:
    """The responder's JSON-lines decisions file, followed across rotation (rename or truncation).

    The cursor is ``<dev>:<inode>:<offset>``; it resumes there when the path still names that file, else reads the
    file now at the path from its start. A line from a file that fails the owner and mode check is skipped (and
    logged once per file)."""

    def __init__(self, path: str, responder_uid: int, cursor: str | None) -> None:
        self.name = f"file {path}"
        self.path = path
        self.uid = responder_uid
        self._fd = -1
        self._ident = (0, 0)
        self._offset = 0
        self._partial = b""
        self._warned = False
        self._resume(cursor)

    def fileno(self) -> int:
        return -1  # no descriptor to wait on: the wake socket and the poll tick

    def _resume(self, cursor: str | None) -> None:
        parts = (cursor or "").split(":")
        if self._open() and len(parts) == 3 and all(p.isdigit() for p in parts):
            dev, ino, offset = (int(p) for p in parts)
            if (dev, ino) == self._ident and offset <= os.fstat(self._fd).st_size:
                self._offset = offset
                return
        if self._fd >= 0 and cursor is None:
            self._offset = os.fstat(self._fd).st_size  # first start: nothing old is republished

    def _open(self) -> bool:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError:
            return False
        if self._fd >= 0:
            os.close(self._fd)
        st = os.fstat(fd)
        self._fd, self._ident, self._offset, self._partial, self._warned = fd, (st.st_dev, st.st_ino), 0, b"", False
        return True

    def _trusted(self) -> bool:
        st = os.fstat(self._fd)
        ok = stat.S_ISREG(st.st_mode) and st.st_uid == self.uid and not st.st_mode & 0o022
        if not ok and not self._warned:
            log.warning("%s: not trusted (owner uid %d, mode %o; want uid %d, not group/world-writable): skipped",
                        self.path, st.st_uid, st.st_mode & 0o7777, self.uid)
            self._warned = True
        return ok

    def read(self, limit: int = 4096) -> list[Decision]:
        try:
            st = os.stat(self.path)
            if (st.st_dev, st.st_ino) != self._ident:
                out = self._read_open(limit)  # what is left of the rotated file first
                if len(out) < limit:
                    self._open()
                return out
        except FileNotFoundError:
            pass
        if self._fd >= 0 and os.fstat(self._fd).st_size < self._offset:
            self._offset, self._partial = 0, b""  # truncated in place
        return self._read_open(limit)

    def _read_open(self, limit: int) -> list[Decision]:
        if self._fd < 0 and not self._open():
            return []
        out: list[Decision] = []
        while len(out) < limit:
            chunk = os.pread(self._fd, 1 << 16, self._offset + len(self._partial))
            if not chunk:
                break
            self._partial += chunk
            *lines, self._partial = self._partial.split(b"\n")
            trusted = self._trusted()
            for line in lines:
                self._offset += len(line) + 1
                if not trusted or not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except ValueError:
                    continue
                if isinstance(obj, dict):
                    fields = {str(k): str(v) for k, v in obj.items() if isinstance(v, str | int)}
                    out.append((fields, f"{self._ident[0]}:{self._ident[1]}:{self._offset}"))
        return out

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def open_input(decisions: str, responder_uid: int, cursor: str | None) -> DecisionInput:
    if decisions == "journal":
        return JournalDecisions(responder_uid, cursor)
    return FileDecisions(decisions, responder_uid, cursor)
