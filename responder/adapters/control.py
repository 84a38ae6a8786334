"""The control socket: one JSON request per connection, one JSON answer. Root or one group only (SO_PEERCRED)."""

from __future__ import annotations

import contextlib
import grp
import json
import os
import socket
import struct
from collections.abc import Callable
from typing import Any

Handler = Callable[[dict[str, Any]], dict[str, Any]]
_MAX_REQUEST = 64 * 1024


class ControlServer:
    def __init__(self, path: str, handler: Handler, group: str = "") -> None:
        self.path = path
        self.handler = handler
        self.gid: int | None = grp.getgrnam(group).gr_gid if group else None
        os.makedirs(os.path.dirname(os.path.abspath(path)), mode=0o755, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        self.sock.bind(path)
        os.chmod(path, 0o660 if self.gid is not None else 0o600)
        if self.gid is not None:
            os.chown(path, 0, self.gid)
        self.sock.listen(16)
        self.sock.setblocking(False)

    def fileno(self) -> int:
        return self.sock.fileno()

    def _allowed(self, conn: socket.socket) -> bool:
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        _, uid, gid = struct.unpack("3i", creds)
        return uid == 0 or uid == os.getuid() or (self.gid is not None and gid == self.gid)

    def serve_one(self) -> None:
        try:
            conn, _ = self.sock.accept()
        except (BlockingIOError, InterruptedError):
            return
        with conn:
            conn.settimeout(2.0)
            try:
                if not self._allowed(conn):
                    conn.sendall(b'{"ok": false, "error": "permission denied"}\n')
                    return
                buf = b""
                while b"\n" not in buf and len(buf) < _MAX_REQUEST:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    buf += chunk
                try:
                    req = json.loads(buf.split(b"\n", 1)[0] or b"{}")
                    if not isinstance(req, dict):
                        raise ValueError("request must be a JSON object")
                    answer = self.handler(req)
                except ValueError as exc:
                    answer = {"ok": False, "error": f"bad request: {exc}"}
                conn.sendall(json.dumps(answer).encode() + b"\n")
            except OSError:
                return

    def close(self) -> None:
        self.sock.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


def request(path: str, req: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
    """Client side: send one request, return the answer (raises OSError when the responder is not there)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(json.dumps(req).encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    answer = json.loads(buf or b"{}")
    if not isinstance(answer, dict):
        raise ValueError("bad answer from the responder")
    return answer
