"""The responder's end of the re-arm socket: tell the detector which bans ended, in few datagrams.

Every ban that ends is queued (:meth:`RearmSender.queue`) and the queue is sent once per loop turn
(:meth:`RearmSender.flush`), packed into as few datagrams as the message format allows
(portsentinel/common/rearm.py). Sending never blocks: when the detector's queue is full the rest waits for the
next turn; when no detector is bound there (not running, restarting) the queue is dropped, since a detector
that starts knows no source and reports every one anew. The queue is bounded: beyond :data:`MAX_PENDING`
targets it collapses into one ``*`` (re-arm every source), which costs the detector one pass over its sources.
"""

from __future__ import annotations

import errno
import logging
import socket

from portsentinel.common import rearm as msg

MAX_PENDING = 65536
log = logging.getLogger("portsentinel.responder")


class RearmSender:
    def __init__(self, path: str) -> None:
        self.path = path
        self._pending: dict[str, None] = {}
        self._everything = False
        self.sent = 0  # datagrams
        self.dropped = 0  # targets dropped because no detector listened
        self._error = 0
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)

    @property
    def pending(self) -> bool:
        return self._everything or bool(self._pending)

    def queue(self, target: str) -> None:
        """A ban of ``target`` (an address or a network) ended. Invalid text is ignored (nothing to re-arm)."""
        if not self.path or self._everything:
            return
        try:
            canonical = msg.canonical_target(target)
        except ValueError:
            return
        if canonical == msg.ALL or len(self._pending) >= MAX_PENDING:
            self._everything = True
            self._pending.clear()
            return
        self._pending[canonical] = None

    def flush(self) -> None:
        """Send what is queued; what the detector's full queue refuses stays for the next call."""
        if not self.pending:
            return
        datagrams = msg.encode([msg.ALL] if self._everything else list(self._pending))
        for i, data in enumerate(datagrams):
            try:
                self._sock.sendto(data, self.path)
            except BlockingIOError:
                self._keep(datagrams[i:])
                return
            except OSError as exc:
                if exc.errno in (errno.ENOENT, errno.ECONNREFUSED, errno.ENOTSOCK, errno.EACCES, errno.EPERM):
                    self.dropped += sum(d.count(b" ") for d in datagrams[i:])
                    if exc.errno in (errno.EACCES, errno.EPERM, errno.ENOTSOCK) and self._error != exc.errno:
                        log.warning("re-arm socket %s: %s: the detector is not told when bans end", self.path,
                                    exc.strerror)
                    self._error = exc.errno or 0
                    break
                self._keep(datagrams[i:])
                return
            self.sent += 1
            self._error = 0
        self._pending.clear()
        self._everything = False

    def _keep(self, datagrams: list[bytes]) -> None:
        left = [t.decode("ascii") for d in datagrams for t in d.split(b" ")[1:]]
        self._pending = dict.fromkeys(t for t in left if t != msg.ALL)
        self._everything = msg.ALL in left

    def close(self) -> None:
        self._sock.close()
