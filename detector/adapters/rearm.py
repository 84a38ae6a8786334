"""The re-arm socket: a unix datagram socket the detector owns, where the responder says which bans ended.

The message (portsentinel/common/rearm.py) is an input like a packet: its sender is checked (the kernel's
SCM_CREDENTIALS: root or the detector's own user, besides the socket file's mode 0660), its size bounded, and
the caller validates its text. At most :data:`DRAIN_MAX` datagrams are read per call, so a flood cannot starve
the capture.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
import struct

#: Datagrams consumed by one :meth:`RearmSocket.receive` call.
DRAIN_MAX = 64
_UCRED = struct.Struct("iII")  # pid, uid, gid


class RearmSocket:
    """Bound at ``path`` (mode 0660; a stale socket file is replaced, a live one or a non-socket refused)."""

    def __init__(self, path: str, *, max_size: int, mode: int = 0o660) -> None:
        self.path = path
        self.max_size = max_size
        self.allowed_uids = frozenset({0, os.geteuid()})
        os.makedirs(os.path.dirname(path) or ".", mode=0o750, exist_ok=True)
        self._remove_stale(path)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
            self._sock.bind(path)
            os.chmod(path, mode)
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
            os.unlink(path)  # nobody bound there: a leftover of a detector that died
            return
        finally:
            probe.close()
        raise OSError(errno.EADDRINUSE, f"{path}: another process is bound to this re-arm socket")

    def fileno(self) -> int:
        return self._sock.fileno()

    def receive(self) -> list[tuple[bytes | None, str]]:
        """The queued datagrams (at most :data:`DRAIN_MAX`): (payload, "") for each acceptable one, (None, why)
        for one refused here (wrong sender, no credentials, too long)."""
        out: list[tuple[bytes | None, str]] = []
        while len(out) < DRAIN_MAX:
            try:
                data, anc, flags, _ = self._sock.recvmsg(self.max_size + 1, socket.CMSG_SPACE(_UCRED.size))
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
