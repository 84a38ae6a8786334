"""The applier's lines, out: appended to the JSON-lines file the responder's ``[fleet]`` jail reads, then one
wake-up datagram to the responder (docs/fleet.md, "Applying").

The file is the fleet user's, mode 0640 (the responder reads it as root, or by the file's group). A batch is
written in one ``write()`` and the responder woken at once: the fdatasync that makes the batch durable is not on
the way of a remote ban (:meth:`RemoteOutput.sync_handle`; the service runs it in a worker thread and commits the
watch position only after it, so a crash replays what may not have reached the disk). Beyond ``max_size`` bytes
the file is renamed to ``.1`` (replacing an older one) and a new one opened: the responder's file source follows
a rename.
"""

from __future__ import annotations

import os

from portsentinel import record as R
from portsentinel.common.jsonlines import JsonLinesWriter
from portsentinel.common.wake import Waker

#: The datagram the fleet daemon wakes the responder with: not empty, so the responder can tell it from the
#: detector's (an empty one: "a record is on its way through journald") and read its files without waiting
#: for the journal (docs/fleet.md).
WAKE_PAYLOAD = b"fleet"


class RemoteOutput:
    def __init__(self, path: str, max_size: int, responder_wake: str) -> None:
        self.path = path
        self.max_size = max_size
        self._writer = JsonLinesWriter(path, sync=False)
        self._waker = Waker(responder_wake)
        self.written = 0

    def write(self, records: list[R.Record]) -> int:
        """Records as lines, written, woken and made durable before returning (tests, tools)."""
        count = self.write_lines([R.to_json_line(r) for r in records])
        self.sync()
        return count

    def write_lines(self, lines: list[str]) -> int:
        """Lines made by ``lines.to_json_line`` (each ending in a newline): one write, one wake of the responder.
        Not durable yet: :meth:`sync` or :meth:`sync_handle` after."""
        count = len(lines)
        self._writer.write_lines("".join(lines))
        if count:
            self._waker.send(WAKE_PAYLOAD)
            self.written += count
            self._rotate()
        return count

    def sync(self) -> None:
        """Everything written so far made durable, here (one fdatasync)."""
        self._writer.flush()

    def sync_handle(self) -> int:
        """A descriptor to fdatasync (then close) for what was written so far, or -1 when nothing was: another
        thread can make it durable while lines go on being written (and the file rotated)."""
        return self._writer.sync_handle()

    def sync_failed(self) -> None:
        """That fdatasync failed: the next sync covers those lines again."""
        self._writer.sync_failed()

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
