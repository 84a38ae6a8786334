"""portsentinel.common.wake: a drain tells the detector's empty wake-up (a record is on its way through journald)
from a datagram that carries a word (the fleet daemon's: it wrote a file the reader follows by inotify)."""

from __future__ import annotations

from pathlib import Path

from portsentinel.common.wake import DRAIN_MAX, Waker, WakeSocket, send_wake


def test_drain_says_whether_an_empty_wake_up_came(tmp_path: Path) -> None:
    path = str(tmp_path / "wake.sock")
    sock = WakeSocket(path)
    fleet = Waker(path)
    try:
        fleet.send(b"fleet")
        fleet.send(b"fleet")
        assert sock.drain() == 2 and not sock.plain
        fleet.send(b"fleet")
        send_wake(path)
        assert sock.drain() == 2 and sock.plain
        assert sock.drain() == 0 and not sock.plain
        for _ in range(DRAIN_MAX + 5):
            fleet.send()
        assert sock.drain() <= DRAIN_MAX and sock.plain
    finally:
        fleet.close()
        sock.close()
