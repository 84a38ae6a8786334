"""responder.adapters.control on a real unix socket: one JSON request per connection, SO_PEERCRED (root, the
owner, or one group), clear errors for malformed requests, and a bound on what a request may send.

Peers of another uid are real processes (``subprocess`` with ``user=``/``group=``) that reach the socket through a
directory descriptor they inherit, so the test's own temporary directory needs no wider mode.
(Supplementary groups: tests/integration/test_control_groups.py.)
"""

from __future__ import annotations

import grp
import json
import os
import selectors
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from portsentinel.responder.adapters.control import ControlServer, request

NOBODY = 65534
PYTHON = "/usr/bin/python3"  # the peer needs only the standard library; the venv's may not be readable by nobody
GROUP = "nogroup"  # gid 65534 on Debian


class Served:
    """A ControlServer whose ``serve_one`` runs whenever its socket is readable, in a thread of the test."""

    def __init__(self, path: Path, group: str = "") -> None:
        self.requests: list[dict[str, Any]] = []
        self.server = ControlServer(str(path), self.handle, group)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def handle(self, req: dict[str, Any]) -> dict[str, Any]:
        self.requests.append(req)
        if req.get("cmd") == "explode":
            raise ValueError("no such command: explode")
        return {"ok": True, "echo": req}

    def _loop(self) -> None:
        with selectors.DefaultSelector() as sel:
            sel.register(self.server, selectors.EVENT_READ)
            while not self._stop.is_set():
                if sel.select(0.05):
                    self.server.serve_one()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.server.close()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    s = Served(tmp_path / "run" / "ctl.sock")
    yield s
    s.close()


def _raw(path: str, data: bytes, *, half_close: bool = True) -> bytes:
    """Send ``data`` on one connection and read until the server closes it."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(20)
        s.connect(path)
        try:
            s.sendall(data)
            if half_close:
                s.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server stopped reading and closed: its answer is still in our queue
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except ConnectionResetError:
            pass  # after the queued answer: the server closed with our unread bytes in its queue
    return out


def test_a_request_and_its_answer(served: Served) -> None:
    assert request(served.server.path, {"cmd": "status", "jail": "scan"}) == {
        "ok": True, "echo": {"cmd": "status", "jail": "scan"}}


def test_one_request_per_connection(served: Served) -> None:
    out = _raw(served.server.path, b'{"cmd": "first"}\n{"cmd": "second"}\n')
    assert out.count(b"\n") == 1 and json.loads(out)["echo"] == {"cmd": "first"}
    assert served.requests == [{"cmd": "first"}]  # the second line was never read as a request


@pytest.mark.parametrize(("data", "error"), [
    (b"status please\n", "bad request: Expecting value"),
    (b'["status"]\n', "bad request: request must be a JSON object"),
    (b'"status"\n', "bad request: request must be a JSON object"),
    (b'{"cmd": "status"\n', "bad request: Expecting"),
    (b"\xff\xfe{}\n", "bad request:"),
    (b'{"cmd": "explode"}\n', "bad request: no such command: explode"),  # the handler's ValueError, reported
])
def test_malformed_requests_get_a_clear_error(served: Served, data: bytes, error: str) -> None:
    answer = json.loads(_raw(served.server.path, data))
    assert answer["ok"] is False and answer["error"].startswith(error), answer


def test_an_empty_connection_is_an_empty_request(served: Served) -> None:
    assert json.loads(_raw(served.server.path, b"")) == {"ok": True, "echo": {}}


def test_an_oversize_request_is_refused_without_reading_it_all(served: Served) -> None:
    """A megabyte with no newline: the server stops after its 64 KiB bound, answers, and closes."""
    huge = b'{"cmd": "status", "pad": "' + b"x" * (1 << 20) + b'"}\n'
    started = time.monotonic()
    answer = json.loads(_raw(served.server.path, huge, half_close=False))
    assert answer["ok"] is False and answer["error"].startswith("bad request:"), answer
    assert served.requests == []  # the handler never saw it
    assert time.monotonic() - started < 15  # not the client's timeout: the server answered


def test_socket_mode_without_and_with_a_group(tmp_path: Path) -> None:
    alone = Served(tmp_path / "a" / "ctl.sock")
    shared = Served(tmp_path / "b" / "ctl.sock", group=GROUP)
    try:
        st = os.stat(alone.server.path)
        assert st.st_mode & 0o777 == 0o600
        st = os.stat(shared.server.path)
        assert st.st_mode & 0o777 == 0o660 and (st.st_uid, st.st_gid) == (0, grp.getgrnam(GROUP).gr_gid)
    finally:
        alone.close()
        shared.close()


def test_a_stale_socket_file_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "run" / "ctl.sock"
    path.parent.mkdir()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as dead:  # a responder that died without removing it
        dead.bind(str(path))
    s = Served(path)
    try:
        assert request(str(path), {"cmd": "status"})["ok"] is True
    finally:
        s.close()


# --------------------------------------------------------------------------- SO_PEERCRED, with real peers
PEER = """
import json, os, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(20)
s.connect(f"/proc/self/fd/{sys.argv[1]}/ctl.sock")
try:
    s.sendall(b'{"cmd": "status"}\\n')
except BrokenPipeError:
    pass  # refused at once: the answer was sent before the request arrived
print(s.makefile("rb").readline().decode().strip())
"""


def _peer(served: Served, *, gid: int) -> dict[str, Any]:
    """The answer to a request sent by a process running as uid 65534 with primary group ``gid`` and no others."""
    dfd = os.open(os.path.dirname(served.server.path), os.O_PATH | os.O_DIRECTORY)
    try:
        done = subprocess.run([PYTHON, "-c", PEER, str(dfd)], user=NOBODY, group=gid, extra_groups=[],
                              pass_fds=(dfd,), capture_output=True, text=True, timeout=60, cwd="/")
    finally:
        os.close(dfd)
    assert done.returncode == 0, done.stderr
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer


def test_peers_by_uid_and_group(tmp_path: Path) -> None:
    """Root is let in; with a group, a peer whose gid is that group is let in and one outside it is refused by
    SO_PEERCRED even when the socket file's mode would let it connect (the check does not rely on the mode)."""
    s = Served(tmp_path / "run" / "ctl.sock", group=GROUP)
    try:
        assert request(s.server.path, {"cmd": "status"})["ok"] is True  # root
        assert _peer(s, gid=grp.getgrnam(GROUP).gr_gid)["ok"] is True
        os.chmod(s.server.path, 0o666)  # a mode gone wrong
        assert _peer(s, gid=grp.getgrnam("adm").gr_gid) == {"ok": False, "error": "permission denied"}
        assert s.requests == [{"cmd": "status"}, {"cmd": "status"}]  # the refused request never reached the handler
    finally:
        s.close()


def test_without_a_group_only_root_is_let_in(tmp_path: Path) -> None:
    s = Served(tmp_path / "run" / "ctl.sock")
    try:
        os.chmod(s.server.path, 0o666)
        assert _peer(s, gid=grp.getgrnam(GROUP).gr_gid) == {"ok": False, "error": "permission denied"}
        assert s.requests == []
    finally:
        s.close()



def test_request_reads_an_answer_sent_before_its_request_was_read(tmp_path: Path) -> None:
    """The server refuses before reading (a peer outside the group, an oversize request) and closes: the client's
    send then breaks, and request() must still return that answer, not an OSError that reads as 'the responder is
    not there'."""
    path = str(tmp_path / "early.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as srv:
        srv.bind(path)
        srv.listen(1)

        def answer_at_once() -> None:
            conn, _ = srv.accept()
            with conn:
                conn.sendall(b'{"ok": false, "error": "permission denied"}\n')

        t = threading.Thread(target=answer_at_once, daemon=True)
        t.start()
        # larger than the socket buffers, so the send cannot complete before the server has closed
        assert request(path, {"cmd": "status", "pad": "x" * (4 << 20)}, timeout=20) == {
            "ok": False, "error": "permission denied"}
        t.join(10)
