"""portsentinel.common.dgram: a socket file a daemon owns — stale ones replaced, live ones and files never."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import pytest

from portsentinel.common.dgram import OwnedSocket


def test_bind_mode_stale_live_and_close(tmp_path: Path) -> None:
    path = str(tmp_path / "run" / "x.sock")
    first = OwnedSocket(path, "test socket", mode=0o660)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o660 and stat.S_ISSOCK(os.stat(path).st_mode)
    with pytest.raises(OSError, match="another process is bound to this test socket"):
        OwnedSocket(path, "test socket")  # a live owner is never replaced
    first.sock.close()  # dies without cleaning up: the file stays, nobody is bound
    second = OwnedSocket(path, "test socket")  # the stale file is replaced
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto(b"hi", path)
    assert second.sock.recv(8) == b"hi"
    second.close()
    assert not os.path.exists(path)
    second.close()  # twice is harmless


def test_a_file_is_never_replaced_and_a_replaced_socket_never_removed(tmp_path: Path) -> None:
    path = tmp_path / "x.sock"
    path.write_text("not a socket")
    with pytest.raises(OSError, match="not a socket"):
        OwnedSocket(str(path), "test socket")
    assert path.read_text() == "not a socket"
    path.unlink()
    mine = OwnedSocket(str(path), "test socket")
    os.unlink(path)
    theirs = OwnedSocket(str(path), "test socket")  # someone else's now
    mine.close()
    assert path.exists()  # not mine any more: left alone
    theirs.close()
    assert not path.exists()
