"""Where the responder writes its decisions: journald, or a JSON-lines file where no journald runs.

The writers are portsentinel.common's. JSON lines are not synced per decision (a restore writes thousands):
:meth:`DecisionLog.flush`, once per turn of the service loop, makes a batch durable at once.
"""

from __future__ import annotations

from portsentinel import record as R
from portsentinel.common.jsonlines import JsonLinesWriter
from portsentinel.common.systemd import JournalWriter


class DecisionLog:
    def __init__(self, jsonl_path: str, use_journal: bool) -> None:
        self.path = jsonl_path
        self._writer: JournalWriter | JsonLinesWriter | None = JournalWriter() if use_journal else None

    @property
    def name(self) -> str:
        return "journal" if isinstance(self._writer, JournalWriter) else f"jsonl {self.path}"

    def write(self, record: R.Record) -> None:
        if self._writer is None:  # opened at the first decision: a responder that decides nothing makes no file
            self._writer = JsonLinesWriter(self.path, sync=False)
        self._writer.write(record)

    def write_aggregate(self, record: R.Record, repeated: dict[str, list[str]]) -> None:
        """One journal entry for many bans: ``record``'s fields, plus each field of ``repeated`` once per value
        (PS_SRC once per address; journald only: a JSON object has no repeated keys, so JSON lines get one line
        per ban)."""
        if not isinstance(self._writer, JournalWriter):
            raise ValueError("aggregated records go to the journal only")
        self._writer.write(record, repeated)

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
