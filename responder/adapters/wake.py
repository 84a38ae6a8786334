"""The wake socket: a data-less datagram from the detector tells the responder to read the journal *now*.

journald coalesces reader notifications with a timer (~250 ms), while a record is in the journal file within a
millisecond of ``sd_journal_send``. The detector therefore sends one empty datagram here after writing each alert
record (:func:`send_wake`); the responder, on receiving it, drains the socket and reads its sources at once, with
a short bounded retry while the record is not visible yet. The datagram carries nothing: the journal stays the
only source of truth, and a forged or lost wake-up changes nothing but timing.

This module imports nothing from the project, so the sender can be used standalone.
"""

from __future__ import annotations

import atexit
import errno
import os
import socket
import stat

#: At most this many queued datagrams are consumed by one :meth:`WakeSocket.drain` (a flood stays bounded).
DRAIN_MAX = 4096

_sender: socket.socket | None = None


def send_wake(path: str) -> None:
    """Send one empty datagram to the wake socket at ``path``. Never blocks, never raises.

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
        _sender.sendto(b"", path)
    except OSError:
        pass


class WakeSocket:
    """The responder's end: a bound unix datagram socket, mode 0660 (owner and ``gid`` may nudge it).

    A stale socket file (nobody bound to it) is replaced; a live one (another responder) or a path that is not a
    socket is refused with an :class:`OSError`.
    """

    def __init__(self, path: str, *, mode: int = 0o660, gid: int | None = None) -> None:
        self.path = path
        parent = os.path.dirname(path) or "."
        os.makedirs(parent, mode=0o755, exist_ok=True)
        self._remove_stale(path)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
        try:
            self._sock.bind(path)
            os.chmod(path, mode)
            if gid is not None:
                os.chown(path, -1, gid)
            st = os.stat(path)
        except OSError:
            self._sock.close()
            raise
        self._ident = (st.st_dev, st.st_ino)

    @staticmethod
    def _remove_stale(path: str) -> None:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(st.st_mode):
            raise OSError(errno.EEXIST, f"{path} exists and is not a socket; not replacing it")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:
            probe.connect(path)
        except ConnectionRefusedError:
            os.unlink(path)  # nobody bound there: a leftover of a responder that died
            return
        finally:
            probe.close()
        raise OSError(errno.EADDRINUSE, f"{path}: another process is listening on this wake socket")

    def fileno(self) -> int:
        return self._sock.fileno()

    def drain(self) -> int:
        """Consume the queued wake-ups (at most :data:`DRAIN_MAX`); returns how many there were."""
        n = 0
        while n < DRAIN_MAX:
            try:
                self._sock.recv(64)
            except (BlockingIOError, InterruptedError):
                break
            n += 1
        return n

    def close(self) -> None:
        """Close the socket and remove its file, unless another process has replaced it since."""
        if self._sock.fileno() < 0:
            return
        self._sock.close()
        try:
            st = os.lstat(self.path)
            if (st.st_dev, st.st_ino) == self._ident:
                os.unlink(self.path)
        except OSError:
            pass
