"""A unix datagram socket a daemon owns at a path (the responder's wake socket, the detector's re-arm socket):
bound with a mode and group, a stale file of a dead owner replaced, a live owner or a non-socket never touched, and
the file removed at close only while it is still this socket's."""

from __future__ import annotations

import errno
import os
import socket
import stat


def remove_stale(path: str, what: str) -> None:
    """Remove a leftover socket file nobody is bound to; refuse a non-socket or a socket with a live owner."""
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
        os.unlink(path)  # nobody bound there: a leftover of a daemon that died
        return
    finally:
        probe.close()
    raise OSError(errno.EADDRINUSE, f"{path}: another process is bound to this {what}")


class OwnedSocket:
    """A non-blocking datagram socket bound at ``path`` (parent made with ``dir_mode``), chmod ``mode``, chgrp
    ``gid``; ``passcred`` asks the kernel for each sender's credentials."""

    def __init__(self, path: str, what: str, *, mode: int = 0o660, dir_mode: int = 0o750, gid: int | None = None,
                 passcred: bool = False) -> None:
        self.path = path
        os.makedirs(os.path.dirname(path) or ".", mode=dir_mode, exist_ok=True)
        remove_stale(path, what)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
        try:
            if passcred:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
            self.sock.bind(path)
            os.chmod(path, mode)
            if gid is not None:
                os.chown(path, -1, gid)
            st = os.stat(path)
        except OSError:
            self.sock.close()
            raise
        self._ident = (st.st_dev, st.st_ino)

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        """Close the socket and remove its file, unless another process has replaced it since."""
        if self.sock.fileno() < 0:
            return
        self.sock.close()
        try:
            st = os.lstat(self.path)
            if (st.st_dev, st.st_ino) == self._ident:
                os.unlink(self.path)
        except OSError:
            pass
