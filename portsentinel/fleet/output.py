"""The applier's lines, out: appended to the JSON-lines file the responder's ``[fleet]`` jail reads, then one
wake-up datagram to the responder (docs/fleet.md, "Applying").

The file is the fleet user's, mode 0640 (the responder reads it as root, or by the file's group); each batch is
made durable once (fdatasync) before the wake-up, and beyond ``max_size`` bytes the file is renamed to ``.1``
(replacing an older one) and a new one opened: the responder's file source follows a rename.
"""

from __future__ import annotations

import os

from portsentinel import record as R
from portsentinel.common.jsonlines import JsonLinesWriter
from portsentinel.common.wake import Waker


class RemoteOutput:
    def __init__(self, path: str, max_size: int, responder_wake: str) -> None:
        self.path = path
        self.max_size = max_size
        self._writer = JsonLinesWriter(path, sync=False)
        self._waker = Waker(responder_wake)
        self.written = 0

    def write(self, records: list[R.Record]) -> int:
        return self.write_lines([R.to_json_line(r) for r in records])

    def write_lines(self, lines: list[str]) -> int:
        """Lines made by ``lines.to_json_line`` (each ending in a newline): one write, one fdatasync, one wake."""
        count = len(lines)
        self._writer.write_lines("".join(lines))
        if count:
            self._writer.flush()
            self._waker.send()
            self.written += count
            self._rotate()
        return count

    def _rotate(self) -> None:
        try:
            size = os.stat(self.path).st_size
        except FileNotFoundError:
            return
        if size > self.max_size:
            os.replace(self.path, self.path + ".1")
            self._writer.reopen()

    def close(self) -> None:
        self._writer.close()
        self._waker.close()
