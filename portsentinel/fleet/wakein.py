"""The fleet daemon's wake socket (``wake``): the responder's datagram after a turn that wrote shared decisions.

Empty, it says "read the journal now". Carrying the turn's shared decisions as JSON lines, it lets the daemon
publish them without waiting for journald to show the records (a few ms, under load tens of ms): the decisions
are taken only from a sender the kernel vouches for (SCM_CREDENTIALS: the uid ``responder_uid``, as the journal's
trusted ``_UID``), a datagram cut short is refused, and each decision is then checked like one read from the
journal. The journal stays the record: the responder wrote it there before sending, and the daemon still reads
it (its cursor moves on; the same decision is not published twice: :class:`.publish.Early`).
"""

from __future__ import annotations

import socket
import struct

from portsentinel.common.dgram import OwnedSocket
from portsentinel.common.wake import DRAIN_MAX, PAYLOAD_MAX

_UCRED = struct.Struct("iII")  # pid, uid, gid


class DecisionWake(OwnedSocket):
    """Bound at ``path`` (mode 0660: the owner and its group may send; a stale file replaced, a live one refused)."""

    def __init__(self, path: str, responder_uid: int) -> None:
        super().__init__(path, "wake socket", mode=0o660, dir_mode=0o755, passcred=True)
        self.responder_uid = responder_uid
        #: Datagrams whose payload was refused (another sender, cut short): they still woke the daemon.
        self.refused = 0

    def drain(self) -> list[bytes]:
        """Consume the queued wake-ups (at most :data:`DRAIN_MAX`); the payloads of the responder's non-empty ones,
        in order."""
        out: list[bytes] = []
        for _ in range(DRAIN_MAX):
            try:
                data, anc, flags, _ = self.sock.recvmsg(PAYLOAD_MAX + 1, socket.CMSG_SPACE(_UCRED.size))
            except (BlockingIOError, InterruptedError):
                break
            if not data:
                continue
            uid = None
            for level, kind, cred in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS and len(cred) >= _UCRED.size:
                    uid = _UCRED.unpack_from(cred)[1]
            if uid != self.responder_uid or flags & socket.MSG_TRUNC or len(data) > PAYLOAD_MAX:
                self.refused += 1
                continue
            out.append(data)
        return out
