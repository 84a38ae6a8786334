"""Where records go: journald or a JSON-lines file (the writers are portsentinel.common's), and the wake-up."""

from __future__ import annotations

from typing import Protocol

from portsentinel import record as R
from portsentinel.common.jsonlines import JsonLinesWriter
from portsentinel.common.systemd import JournalWriter, journal_available


class Sink(Protocol):
    name: str

    def write(self, record: R.Record) -> None: ...

    def reopen(self) -> None: ...

    def close(self) -> None: ...


def open_sink(output: str, jsonl_path: str) -> Sink:
    """The sink for ``output`` (journal, jsonl, or auto): JSON lines are synced per record, one alert matters."""
    if output == "journal" or (output == "auto" and journal_available()):
        return JournalWriter()
    return JsonLinesWriter(jsonl_path, sync=True)


