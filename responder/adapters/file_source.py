"""A followed file as a :class:`~responder.core.sources.Source`: the detector's JSON-lines records or a plain log.

inotify (pyinotify) watches the file's *directory*, so the file may appear later, be renamed away and replaced
(rotation), or be truncated; the descriptor only wakes the responder, and :meth:`FileSource.read` works from
``stat``/``fstat`` so a lost or coalesced event loses nothing.

- Only complete lines (ending in ``\\n``) are returned; a partial last line waits for its end. A line longer than
  :data:`MAX_LINE` bytes is cut: it comes back once as an entry with ``error`` set and the rest of it is skipped.
- Rotation: the old inode stays open and is read to its end; the new file is read from 0. The old one is closed
  once the new file has data (the writer has moved on); its unterminated last line, if any, is returned then.
- Truncation (size below what was read, same inode): read again from 0.
- Cursor: ``"<dev>:<inode>:<offset>"``, the byte offset after the entry's line. ``seek`` resumes there when the
  path still names that inode (from 0 if the file is now shorter), and reads a different inode from 0.
- Trust (``kind="jsonl"``): the open file must be a regular file, not reached through a symlink, owned by
  ``expected_uid`` (``None``: root or the responder's own uid) and not group- or world-writable. Checked with
  ``fstat`` on the open descriptor at every read, so a later ``chmod o+w`` makes the following entries untrusted.
"""

from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass, field
from typing import Any, Literal

import pyinotify

from portsentinel import record as psrecord
from portsentinel import record_screen as psrecord_screen
from portsentinel.responder.core.sources import Entry

log = logging.getLogger("portsentinel.responder")

#: Longest line kept, in bytes; a longer one is cut and reported.
MAX_LINE = 64 * 1024
_CHUNK = 64 * 1024
#: Rotated-away files kept open at most (the oldest is finished and closed first).
_MAX_OLD = 4

_DIR_MASK = (pyinotify.IN_MODIFY | pyinotify.IN_CREATE | pyinotify.IN_MOVED_TO | pyinotify.IN_MOVED_FROM
             | pyinotify.IN_DELETE | pyinotify.IN_CLOSE_WRITE | pyinotify.IN_DELETE_SELF | pyinotify.IN_MOVE_SELF)
_ANCESTOR_MASK = pyinotify.IN_CREATE | pyinotify.IN_MOVED_TO


@dataclass
class _Open:
    """One open inode: bytes before ``offset`` are consumed; ``buf`` holds what follows, short of a newline."""

    fd: int
    dev: int
    ino: int
    via_symlink: bool
    offset: int = 0
    buf: bytearray = field(default_factory=bytearray)
    lineno: int | None = 1  # number of the next line, when known (not after resuming mid-file)
    discarding: bool = False  # inside an over-long line: skip to its newline

    def close(self) -> None:
        try:
            os.close(self.fd)
        except OSError:
            pass


class FileSource:
    """Follows ``path``; ``kind="jsonl"`` parses each line as a record, ``kind="text"`` returns the lines."""

    def __init__(self, path: str, *, kind: Literal["jsonl", "text"], expected_uid: int | None = None,
                 name: str | None = None) -> None:
        if kind not in ("jsonl", "text"):
            raise ValueError(f"kind must be 'jsonl' or 'text', not {kind!r}")
        self.path = os.path.abspath(path)
        self.kind = kind
        self.expected_uid = expected_uid
        self.name = name or f"file:{path}"
        self.events = 0  # inotify events seen (for tests and status)
        self._dir = os.path.dirname(self.path)
        self._cur: _Open | None = None
        self._old: list[_Open] = []
        self._wm: Any = pyinotify.WatchManager()
        self._notifier: Any = pyinotify.Notifier(self._wm, default_proc_fun=self._on_event, timeout=0)
        self._wd: int | None = None
        self._watched = ""
        self._ensure_watch()
        self.seek(None)

    # ------------------------------------------------------------------ Source
    def fileno(self) -> int:
        return int(self._wm.get_fd())

    def process(self) -> None:
        """Read the queued inotify events (bounded); re-arm the directory watch if it went away."""
        for _ in range(64):
            if not self._notifier.check_events(timeout=0):
                break
            self._notifier.read_events()
            self._notifier.process_events()
        self._ensure_watch()

    def seek(self, cursor: str | None) -> None:
        self._close_files()
        if cursor:
            try:
                dev, ino, offset = (int(x) for x in cursor.split(":"))
                if offset < 0:
                    raise ValueError("negative offset")
            except ValueError:
                log.warning("%s: bad cursor %r; starting at the end", self.name, cursor)
            else:
                self._cur = self._open()
                f = self._cur
                if f is not None and (f.dev, f.ino) == (dev, ino) and offset <= os.fstat(f.fd).st_size:
                    f.offset, f.lineno = offset, (1 if offset == 0 else None)
                return  # another inode (or a shorter file), or none yet: from 0 when it is there
        self._cur = self._open()
        if self._cur is not None:
            self._seek_end(self._cur)

    def position(self) -> str | None:
        """The cursor of the current point of the followed file; None while there is no file."""
        return None if self._cur is None else self._cursor(self._cur)

    def read(self, limit: int = 1024) -> list[Entry]:
        """Up to ``limit`` complete lines available now, oldest first (call again while it returns ``limit``)."""
        out: list[Entry] = []
        self._check_path()
        while self._old and len(out) < limit:
            old = self._old[0]
            at_end = self._drain(old, out, limit)
            if not at_end:
                break
            if (self._cur is not None and os.fstat(self._cur.fd).st_size > 0) or len(self._old) > _MAX_OLD:
                self._finish(old, out)
                self._old.pop(0).close()
            else:
                break  # the writer may still append to the old inode
        if self._cur is not None and len(out) < limit:
            self._drain(self._cur, out, limit)
        return out

    def close(self) -> None:
        self._close_files()
        self._notifier.stop()

    # ------------------------------------------------------------------ inotify
    def _on_event(self, _event: Any) -> None:
        self.events += 1

    def _ensure_watch(self) -> None:
        if self._wd is not None and self._wm.get_path(self._wd) is not None and self._watched == self._dir:
            return
        if self._wd is not None and self._wm.get_path(self._wd) is not None:
            self._wm.rm_watch(self._wd, quiet=True)
        self._wd, self._watched = None, ""
        target, mask = self._dir, _DIR_MASK
        while not os.path.isdir(target):  # the directory is not there yet: watch the nearest ancestor for it
            parent = os.path.dirname(target)
            if parent == target:
                return
            target, mask = parent, _ANCESTOR_MASK
        wd = self._wm.add_watch(target, mask, quiet=True).get(target, -1)
        if isinstance(wd, int) and wd >= 0:
            self._wd, self._watched = wd, target
        else:
            log.warning("%s: cannot watch %s", self.name, target)

    # ------------------------------------------------------------------ files
    def _open(self) -> _Open | None:
        try:
            link = stat.S_ISLNK(os.lstat(self.path).st_mode)
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY)
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("%s: cannot open %s: %s", self.name, self.path, exc)
            return None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            log.warning("%s: %s is not a regular file", self.name, self.path)
            return None
        return _Open(fd, st.st_dev, st.st_ino, link)

    def _close_files(self) -> None:
        for f in self._old:
            f.close()
        self._old = []
        if self._cur is not None:
            self._cur.close()
            self._cur = None

    def _seek_end(self, f: _Open) -> None:
        """After the last complete line: a line being written now is new, so its start is kept."""
        size = os.fstat(f.fd).st_size
        start = max(0, size - MAX_LINE)
        tail = os.pread(f.fd, size - start, start)
        nl = tail.rfind(b"\n")
        if nl >= 0:
            f.offset = start + nl + 1
        elif start == 0:
            f.offset = 0
        else:  # the end of an over-long line: skip to its newline
            f.offset, f.discarding = size, True
        f.lineno = 1 if f.offset == 0 else None

    def _check_path(self) -> None:
        """Notice rotation (the path names another inode, or none) and truncation."""
        try:
            st: os.stat_result | None = os.stat(self.path)
        except OSError:
            st = None
        cur = self._cur
        if cur is None:
            if st is not None:
                self._cur = self._open()  # appeared (or came back): all of it is new
            return
        if st is None or (st.st_dev, st.st_ino) != (cur.dev, cur.ino):
            self._old.append(cur)
            self._cur = self._open() if st is not None else None
            return
        if st.st_size < cur.offset + len(cur.buf):
            log.warning("%s: %s was truncated; reading it from the start", self.name, self.path)
            cur.offset, cur.lineno, cur.discarding = 0, 1, False
            cur.buf.clear()

    def _drain(self, f: _Open, out: list[Entry], limit: int) -> bool:
        """Append complete lines of ``f`` to ``out`` (up to ``limit``); True when ``f`` is read to its end.
        JSON lines are parsed and checked together (:meth:`_records`)."""
        trusted = self._trusted(f)
        lines: list[tuple[str, int, int | None, str]] = []  # (text, start, line number, cursor) of JSON lines
        jsonl = block = self.kind == "jsonl"
        try:
            while len(out) + len(lines) < limit:
                if block and not f.discarding:
                    if self._block(f, lines, limit - len(out) - len(lines)):
                        continue
                    block = False  # (none, or not all ASCII: line by line until more is read)
                nl = f.buf.find(b"\n")
                if nl >= 0:
                    raw = bytes(f.buf[:nl])
                    del f.buf[: nl + 1]
                    start = f.offset
                    f.offset += nl + 1
                    if not f.discarding:
                        if jsonl:
                            text = raw.decode("utf-8", "replace")
                            if text.endswith("\r"):
                                text = text[:-1]
                            if text.strip():  # (a blank line in a JSON-lines file carries nothing)
                                lines.append((text, start, f.lineno, self._cursor(f)))
                        else:
                            entry = self._entry(f, raw, start, trusted)
                            if entry is not None:
                                out.append(entry)
                    f.discarding = False
                    if f.lineno is not None:
                        f.lineno += 1
                    continue
                if f.discarding:
                    f.offset += len(f.buf)
                    f.buf.clear()
                elif len(f.buf) >= MAX_LINE:
                    self._records(lines, trusted, out)  # (the lines before it go first)
                    out.append(self._cut(f))
                    continue
                chunk = os.pread(f.fd, _CHUNK, f.offset + len(f.buf))
                if not chunk:
                    return True
                f.buf += chunk
                block = jsonl
            return False
        finally:
            self._records(lines, trusted, out)

    def _block(self, f: _Open, lines: list[tuple[str, int, int | None, str]], room: int) -> bool:
        """The complete lines at the start of ``f.buf`` (at most ``room``) taken at once when they are all ASCII
        (a character is a byte: the offsets come from the text); False when there are none, or not only ASCII
        (then the per-line loop takes them)."""
        last = f.buf.rfind(b"\n")
        if last < 0:
            return False
        block = bytes(f.buf[: last + 1])
        if not block.isascii():
            return False
        texts = block.decode("ascii").split("\n")
        texts.pop()  # (after the last newline: nothing)
        del texts[room:]
        offset, lineno, prefix = f.offset, f.lineno, f"{f.dev}:{f.ino}:"
        append = lines.append
        for text in texts:
            start = offset
            offset += len(text) + 1
            if text.endswith("\r"):
                text = text[:-1]
            if text and not text.isspace():  # (a blank line in a JSON-lines file carries nothing)
                append((text, start, lineno, f"{prefix}{offset}"))
            if lineno is not None:
                lineno += 1
        del f.buf[: offset - f.offset]
        f.offset, f.lineno = offset, lineno
        return True

    def _records(self, lines: list[tuple[str, int, int | None, str]], trusted: bool, out: list[Entry]) -> None:
        """JSON lines (text, start, line number, cursor) → entries appended to ``out``, in order, and ``lines``
        emptied: checked together by the bulk screen, each line it is not certain about by the per-line check."""
        if not lines:
            return
        screened = psrecord_screen.screen_json_lines([t for t, _, _, _ in lines])
        new, append = tuple.__new__, out.append
        for (text, start, lineno, cursor), fields in zip(lines, screened, strict=True):
            if fields is not None:
                append(new(Entry, (fields, "", cursor, trusted, "")))  # Entry(fields, "", cursor, trusted)
            else:
                out.append(self._record(text, cursor, self._where_at(lineno, start), trusted))
        lines.clear()

    def _finish(self, f: _Open, out: list[Entry]) -> None:
        """The writer left ``f``: its unterminated last line, if any, is all there will be."""
        if f.buf and not f.discarding:
            start = f.offset
            raw = bytes(f.buf)
            f.offset += len(raw)
            f.buf.clear()
            entry = self._entry(f, raw, start, self._trusted(f))
            if entry is not None:
                out.append(entry)

    def _cut(self, f: _Open) -> Entry:
        where = self._where(f, f.offset)
        text = bytes(f.buf[:MAX_LINE]).decode("utf-8", "replace")
        f.offset += len(f.buf)
        f.buf.clear()
        f.discarding = True
        return Entry({}, text, self._cursor(f), False, f"{where}: line longer than {MAX_LINE} bytes, cut")

    # ------------------------------------------------------------------ entries
    def _trusted(self, f: _Open) -> bool:
        if f.via_symlink:
            return False
        try:
            st = os.fstat(f.fd)
        except OSError:
            return False
        if not stat.S_ISREG(st.st_mode) or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            return False
        if self.expected_uid is None:
            return st.st_uid in (0, os.geteuid())
        return st.st_uid == self.expected_uid

    def _where(self, f: _Open, start: int) -> str:
        return self._where_at(f.lineno, start)

    def _where_at(self, lineno: int | None, start: int) -> str:
        return f"{self.path}:{lineno}" if lineno is not None else f"{self.path}:@{start}"

    @staticmethod
    def _cursor(f: _Open) -> str:
        return f"{f.dev}:{f.ino}:{f.offset}"

    def _entry(self, f: _Open, raw: bytes, start: int, trusted: bool) -> Entry | None:
        text = raw.decode("utf-8", "replace")
        if text.endswith("\r"):
            text = text[:-1]
        cursor = self._cursor(f)
        if self.kind == "text":
            return Entry({}, text, cursor, trusted)
        if not text.strip():
            return None  # a blank line in a JSON-lines file carries nothing
        return self._record(text, cursor, self._where(f, start), trusted)

    @staticmethod
    def _record(text: str, cursor: str, where: str, trusted: bool) -> Entry:
        """One JSON line checked on its own: its entry, or an error entry naming ``where`` and the field."""
        try:
            fields = psrecord.json_line_fields(text)  # parsed and validated once, a new dict (no copy)
        except psrecord.RecordError as exc:
            return Entry({}, "", cursor, False, f"{where}: {exc.field}: {exc.reason}")
        except (ValueError, RecursionError) as exc:  # e.g. an integer too long to convert, absurd nesting
            return Entry({}, "", cursor, False, f"{where}: *: not a record: {exc}")
        return Entry(fields, "", cursor, trusted)
