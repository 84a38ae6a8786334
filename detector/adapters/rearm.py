"""The re-arm socket: a unix datagram socket the detector owns, where the responder says which bans ended.

The message (portsentinel/common/rearm.py) is an input like a packet: its sender is checked (the kernel's
SCM_CREDENTIALS: root or the detector's own user, besides the socket file's mode 0660), its size bounded, and
the caller validates its text. At most :data:`DRAIN_MAX` datagrams are read per call, so a flood cannot starve
the capture.
"""

from __future__ import annotations

import os
import socket
import struct

from portsentinel.common.dgram import OwnedSocket

#: Datagrams consumed by one :meth:`RearmSocket.receive` call.
DRAIN_MAX = 64
_UCRED = struct.Struct("iII")  # pid, uid, gid


class RearmSocket(OwnedSocket):
    """Bound at ``path`` (mode 0660; a stale socket file is replaced, a live one or a non-socket refused)."""

    def __init__(self, path: str, *, max_size: int, mode: int = 0o660) -> None:
        super().__init__(path, "re-arm socket", mode=mode, dir_mode=0o750, passcred=True)
        self.max_size = max_size
        self.allowed_uids = frozenset({0, os.geteuid()})

    def receive(self) -> list[tuple[bytes | None, str]]:
        """The queued datagrams (at most :data:`DRAIN_MAX`): (payload, "") for each acceptable one, (None, why)
        for one refused here (wrong sender, no credentials, too long)."""
        out: list[tuple[bytes | None, str]] = []
        while len(out) < DRAIN_MAX:
            try:
                data, anc, flags, _ = self.sock.recvmsg(self.max_size + 1, socket.CMSG_SPACE(_UCRED.size))
            except (BlockingIOError, InterruptedError):
                break
            uid = None
            for level, kind, payload in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS and len(payload) >= _UCRED.size:
                    uid = _UCRED.unpack_from(payload)[1]
            if uid is None:
                out.append((None, "no sender credentials"))
            elif uid not in self.allowed_uids:
                out.append((None, f"sender uid {uid} is neither root nor the detector's user"))
            elif flags & socket.MSG_TRUNC or len(data) > self.max_size:
                out.append((None, f"datagram longer than {self.max_size} bytes"))
            else:
                out.append((data, ""))
        return out
