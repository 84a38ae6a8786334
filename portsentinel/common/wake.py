"""The wake socket: a data-less datagram tells a daemon to read its records *now* (the detector nudges the
responder; the responder and the fleet link nudge each other).

journald coalesces reader notifications with a timer (~250 ms), while a record is in the journal file within a
millisecond of ``sd_journal_send``. The detector therefore sends one empty datagram here after writing each alert
record (:func:`send_wake`); the responder, on receiving it, drains the socket and reads its sources at once, with
a short bounded retry while the record is not visible yet. The datagram carries nothing: the journal stays the
only source of truth, and a forged or lost wake-up changes nothing but timing.

The senders (:class:`Waker`, :func:`send_wake`) need nothing but the standard library.
"""

from __future__ import annotations

import atexit
import json
import socket
from collections.abc import Mapping, Sequence

from portsentinel.common.dgram import OwnedSocket

#: At most this many queued datagrams are consumed by one :meth:`WakeSocket.drain` (a flood stays bounded).
DRAIN_MAX = 4096

_sender: socket.socket | None = None


class Waker:
    """A sender bound to one path, for a daemon that nudges the same reader after each record it writes.
    Never blocks, never fails: nobody listening, or a full queue (the reader is awake anyway), changes nothing."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)

    def send(self, payload: bytes = b"") -> None:
        """One datagram (empty unless ``payload``: a receiver may tell its senders apart by it)."""
        if not self.path:
            return
        try:
            self._sock.sendto(payload, self.path)
        except OSError:
            pass

    def close(self) -> None:
        self._sock.close()


def send_wake(path: str, payload: bytes = b"") -> None:
    """Send one datagram (empty unless ``payload``) to the wake socket at ``path``. Never blocks, never raises.

    Nothing happens when ``path`` is empty, when nobody listens there, when the socket's queue is full (the
    receiver is awake anyway) or on any other error. One process-wide non-blocking socket is reused.
    """
    global _sender
    if not path:
        return
    try:
        if _sender is None:
            _sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
            atexit.register(_sender.close)
        _sender.sendto(payload, path)
    except OSError:
        pass


#: The largest wake-up payload: the responder's shared decisions of one turn as JSON lines (docs/fleet.md,
#: "Publishing"); a turn with more sends an empty wake-up and the fleet daemon reads them from the journal.
PAYLOAD_MAX = 16 * 1024


def records_payload(records: Sequence[Mapping[str, str]]) -> bytes:
    """Records as JSON lines for one wake-up datagram, or empty when they would not fit in :data:`PAYLOAD_MAX`
    (the datagram then only wakes: the reader finds them where they were written)."""
    parts: list[str] = []
    size = 0
    for rec in records:
        line = json.dumps(dict(rec), separators=(",", ":"), ensure_ascii=True) + "\n"
        size += len(line)
        if size > PAYLOAD_MAX:  # (a bulk of shared bans: stop at once)
            return b""
        parts.append(line)
    return "".join(parts).encode("ascii")


class WakeSocket(OwnedSocket):
    """The responder's end: a bound unix datagram socket, mode 0660 (owner and ``gid`` may nudge it).

    A stale socket file (nobody bound to it) is replaced; a live one (another responder) or a path that is not a
    socket is refused with an :class:`OSError`.
    """

    def __init__(self, path: str, *, mode: int = 0o660, gid: int | None = None) -> None:
        super().__init__(path, "wake socket", mode=mode, dir_mode=0o755, gid=gid)

    #: The last :meth:`drain` consumed an empty datagram (the detector's: "a record is on its way through
    #: journald"); the fleet daemon's carries a word (it wrote a file the reader follows by inotify anyway).
    plain = False

    def drain(self) -> int:
        """Consume the queued wake-ups (at most :data:`DRAIN_MAX`); returns how many there were."""
        n = 0
        self.plain = False
        while n < DRAIN_MAX:
            try:
                data = self.sock.recv(64)
            except (BlockingIOError, InterruptedError):
                break
            self.plain = self.plain or not data
            n += 1
        return n
