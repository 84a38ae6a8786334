"""The journal as a :class:`~responder.core.sources.Source`: python-systemd's ``journal.Reader`` behind typed code.

This is the only module in ``responder/`` that imports ``systemd.journal``.

- Matches are pushed down to sd-journal: a list of OR-ed groups, each group AND-ed ``FIELD=value`` terms
  (fail2ban's ``journalmatch`` with ``+``). An empty list, or an empty group, matches everything. A field
  may carry several values (a tuple): sd-journal ORs them (the service passes a jail's trusted ``_UID``
  values this way, so journald never hands over what other users forged).
- Fields come back as journald's plain text: the raw ``bytes`` are decoded (UTF-8, invalid bytes replaced) and
  nothing is converted to ``datetime``/``UUID``/``int``; ``__REALTIME_TIMESTAMP`` and ``__MONOTONIC_TIMESTAMP``
  are decimal microseconds as ``journalctl -o export`` prints them; ``__CURSOR`` is also the entry's cursor.
  A field repeated in one entry keeps its first value (journald's trusted fields are never repeated).
- ``seek(cursor)`` resumes strictly after the cursor; ``seek(None)`` at the current end. Both position the
  reader by cursor, never by ``seek_tail()`` under matches (that loses the next matching entry while nothing
  matches yet).
- A Reader that cannot open the system journal (no permission: not root, not in ``systemd-journal``) returns
  nothing at all and says nothing; :class:`JournalSource` raises :class:`JournalUnavailable` instead.
"""

from __future__ import annotations

import glob
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

from systemd import journal as _journal

log = logging.getLogger("portsentinel.journal")

#: Where journald keeps its files (volatile, persistent).
JOURNAL_DIRS = ("/run/log/journal", "/var/log/journal")

_FIELD_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")


class JournalUnavailable(OSError):
    """The journal cannot be read here (no journal files, or no permission to read them)."""


def _system_journal_files(dirs: tuple[str, ...] = JOURNAL_DIRS) -> list[str]:
    files: list[str] = []
    for d in dirs:
        files.extend(glob.glob(os.path.join(d, "*", "system*.journal")))
    return files


def journal_problem(path: str | None = None) -> str | None:
    """None when the journal can be read; else a sentence saying why not (for errors and ``backend = auto``)."""
    try:
        reader = _journal.Reader(path=path)
    except OSError as exc:
        return f"cannot open the journal{f' in {path}' if path else ''}: {exc}"
    try:
        return _files_problem(reader, path)
    finally:
        reader.close()


def _files_problem(reader: Any, path: str | None) -> str | None:
    where = path or " or ".join(JOURNAL_DIRS)
    hint = "run as root or add the user to the systemd-journal group"
    if not (reader.has_runtime_files() or reader.has_persistent_files()):
        if path is None and not _system_journal_files():
            return f"no journal files in {where} (is systemd-journald running?)"
        return f"no readable journal files in {where}: {hint}"
    if path is None:
        unreadable = [f for f in _system_journal_files() if not os.access(f, os.R_OK)]
        if unreadable:
            return f"cannot read {unreadable[0]}: {hint}"
    return None


def journal_readable(path: str | None = None) -> bool:
    """True when a journal with readable system journal files is there (``backend = auto`` picks systemd)."""
    return journal_problem(path) is None


#: One match group: FIELD → value, or FIELD → several values (OR-ed by sd-journal, e.g. trusted _UIDs).
MatchGroup = Mapping[str, str | tuple[str, ...]]


def _check_matches(matches: Sequence[MatchGroup]) -> list[list[str]]:
    groups: list[list[str]] = []
    for group in matches:
        terms: list[str] = []
        for name, values in group.items():
            bare = name.lstrip("_")
            if not bare or len(name) > 64 or bare[0].isdigit() or not set(bare) <= _FIELD_CHARS:
                raise ValueError(f"journal match: {name!r} is not a journal field name")
            for value in (values,) if isinstance(values, str) else values:
                if "\n" in value:
                    raise ValueError(f"journal match: the value of {name} contains a newline")
                terms.append(f"{name}={value}")
        if not terms:
            return []  # an empty group matches every entry, so the whole disjunction does
        groups.append(terms)
    return groups


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


#: One entry: journald's fields as text (``__CURSOR`` included), and the cursor to resume after it.
JournalEntry = tuple[dict[str, str], str]


class _RawReader(_journal.Reader):  # type: ignore[misc]  # python-systemd is untyped
    """python-systemd's Reader, with the calls of its C reader that return raw values (no per-field conversion to
    datetime, UUID, int: what keeps a catch-up of 100,000 entries fast) named as this module uses them."""

    def next_entry(self) -> bool:
        return bool(self._next(1))

    def previous_entry(self) -> bool:
        return bool(self._previous(1))

    def raw_fields(self) -> Mapping[str, Any]:
        fields: Mapping[str, Any] = self._get_all()
        return fields

    def cursor(self) -> str:
        return str(self._get_cursor())

    def realtime_us(self) -> int:
        return int(self._get_realtime())

    def monotonic_us(self) -> int:
        return int(self._get_monotonic()[0])


class JournalReader:
    """Follows the journal, filtered by ``matches``; entries carry journald's fields as text."""

    def __init__(self, matches: Sequence[MatchGroup], *, path: str | None = None, name: str = "journal") -> None:
        self.name = name
        self.path = path
        self._groups = _check_matches(matches)
        try:
            self._reader = _RawReader(path=path)
        except OSError as exc:
            raise JournalUnavailable(f"cannot open the journal: {exc}") from exc
        problem = _files_problem(self._reader, path)
        if problem:
            self._reader.close()
            raise JournalUnavailable(problem)
        self._fd: int = int(self._reader.fileno())  # sets up sd-journal's inotify before the first seek
        self._pending = False  # the reader already stands on an entry that entries() has not returned
        self._anchor: str | None = None  # cursor of the last entry returned (or sought after); None: from head
        self._apply_matches()
        self.seek(None)

    def fileno(self) -> int:
        return self._fd

    def process(self) -> None:
        """Acknowledge the descriptor (sd_journal_process): picks up new and rotated journal files."""
        self._reader.process()

    def seek(self, cursor: str | None) -> None:
        if cursor:
            try:
                self._seek_after(cursor)
                return
            except (OSError, ValueError) as exc:
                log.warning("%s: cannot resume after cursor %r (%s); starting at the end", self.name, cursor, exc)
        self._seek_end()

    def position(self) -> str | None:
        """The cursor to resume after: the last entry returned or sought after (None: the journal was empty)."""
        return self._anchor

    def entries(self, limit: int = 1024) -> list[JournalEntry]:
        out: list[JournalEntry] = []
        reader = self._reader
        refreshed = False
        while len(out) < limit:
            if self._pending:
                self._pending = False
            elif not reader.next_entry():
                if refreshed:
                    break
                # sd-journal (systemd 252) with matches can stay blind to an entry journald appended while this
                # reader was looking, until the next entry arrives; seeking again to the last entry cures it.
                refreshed = True
                self._refresh()
                continue
            entry = self._entry()
            if entry is not None:
                out.append(entry)
                self._anchor = entry[1]
        return out

    def close(self) -> None:
        self._reader.close()

    # ------------------------------------------------------------------ internals
    def _apply_matches(self) -> None:
        reader = self._reader
        reader.flush_matches()
        for i, terms in enumerate(self._groups):
            if i:
                reader.add_disjunction()
            for term in terms:
                reader.add_match(term)

    def _refresh(self) -> None:
        """Position again after the last entry returned (or the start, when it was the empty journal's head)."""
        if self._anchor is None:
            self._reader.seek_head()
            self._pending = False
        else:
            self._seek_after(self._anchor)

    def _seek_after(self, cursor: str) -> None:
        reader = self._reader
        self._pending = False
        reader.seek_cursor(cursor)
        self._anchor = cursor
        if reader.next_entry():
            # sd_journal_seek_cursor() lands on the cursor's entry when it still exists and matches; skip it.
            # Otherwise we already stand on the first entry after it, which entries() must still return.
            self._pending = not reader.test_cursor(cursor)

    def _seek_end(self) -> None:
        """Stand after the last entry of the *unfiltered* journal, then filter again and resume by cursor."""
        reader = self._reader
        self._pending = False
        reader.flush_matches()
        reader.seek_tail()
        last: str | None = reader.cursor() if reader.previous_entry() else None
        self._apply_matches()
        if last is None:
            reader.seek_head()  # an empty journal: everything that arrives is new
            self._anchor = None
        else:
            self._seek_after(last)

    def _entry(self) -> JournalEntry | None:
        reader = self._reader
        try:
            raw = reader.raw_fields()
            cursor = reader.cursor()
        except OSError as exc:  # a corrupt entry: skip it, the next one is fine
            log.warning("%s: unreadable journal entry skipped: %s", self.name, exc)
            return None
        fields: dict[str, str] = {}
        for key, value in raw.items():
            fields[key] = _text(value[0] if isinstance(value, list) else value)
        try:
            fields["__REALTIME_TIMESTAMP"] = str(reader.realtime_us())
            fields["__MONOTONIC_TIMESTAMP"] = str(reader.monotonic_us())
        except OSError:
            pass
        fields["__CURSOR"] = cursor
        return fields, cursor
