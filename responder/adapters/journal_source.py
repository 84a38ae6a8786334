"""The journal as a :class:`~portsentinel.responder.core.sources.Source`: ``portsentinel.common.journal``'s reader
(python-systemd behind typed code, shared with the fleet daemon), its entries as the responder's ``Entry``."""

from __future__ import annotations

from portsentinel.common.journal import (
    JOURNAL_DIRS,
    JournalReader,
    JournalUnavailable,
    MatchGroup,
    _check_matches,
    journal_problem,
    journal_readable,
)

from ..core.sources import Entry

__all__ = ["JOURNAL_DIRS", "JournalSource", "JournalUnavailable", "MatchGroup", "_check_matches", "journal_problem",
           "journal_readable"]


class JournalSource(JournalReader):
    """Follows the journal, filtered by ``matches``; entries carry journald's fields as text."""

    def read(self, limit: int = 1024) -> list[Entry]:
        return [Entry(fields=fields, line="", cursor=cursor) for fields, cursor in self.entries(limit)]
