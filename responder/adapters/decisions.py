"""Where the responder writes its decisions: journald, or a JSON-lines file where no journald runs."""

from __future__ import annotations

import os

from portsentinel import record as R


class DecisionLog:
    def __init__(self, jsonl_path: str, use_journal: bool) -> None:
        self.path = jsonl_path
        self._send = None
        if use_journal:
            from systemd import journal

            self._send = journal.send

    @property
    def name(self) -> str:
        return "journal" if self._send else f"jsonl {self.path}"

    def write(self, record: R.Record) -> None:
        if self._send is not None:
            fields = R.to_journal_fields(record)
            msg = fields.pop(R.F_MESSAGE)
            self._send(msg, **fields)
            return
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), mode=0o750, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        try:
            os.write(fd, R.to_json_line(record).encode("ascii"))
        finally:
            os.close(fd)
