"""What the responder reads: entries from a source (journal, JSON-lines file, plain log), with a cursor.

The adapters in ``responder/adapters/`` implement :class:`Source`; the service only sees this interface.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol


class Entry(NamedTuple):
    """One record or log line.

    ``fields``: journald fields (trusted ``_UID``, ``_SYSTEMD_UNIT``… included) or a JSON-lines record's
    fields; empty for a plain log line. ``line``: the text line for plain logs (else ""). ``cursor``: where to
    resume *after* this entry. ``trusted``: the transport vouches for the writer (journal: filled in by the
    trust check from the trusted fields; JSON-lines: the file's owner and mode passed the check).
    ``error``: a line that could not be parsed (the service logs it and moves on; nothing is banned).
    """

    fields: dict[str, str]
    line: str
    cursor: str
    trusted: bool = False
    error: str = ""


class Source(Protocol):
    """A followed stream of entries. Non-blocking: ``read`` returns what is there now."""

    name: str

    def fileno(self) -> int:
        """A descriptor that becomes readable when entries may have arrived (-1 for none)."""
        ...

    def seek(self, cursor: str | None) -> None:
        """Resume after ``cursor``; ``None`` starts at the current end (nothing old is replayed)."""
        ...

    def position(self) -> str | None:
        """The cursor to resume at the current point (``seek`` takes it); None when there is none yet."""
        ...

    def process(self) -> None:
        """Acknowledge the descriptor's wake-up (journal: sd_journal_process; inotify: read events)."""
        ...

    def read(self, limit: int = 1024) -> list[Entry]:
        """Up to ``limit`` entries available now, oldest first."""
        ...

    def close(self) -> None: ...
