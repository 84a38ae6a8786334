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
