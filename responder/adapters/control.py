"""The control socket: one JSON request per connection, one JSON answer. Root or one group only (SO_PEERCRED)."""

from __future__ import annotations

import contextlib
import grp
import json
import os
import pwd
import socket
import struct
from collections.abc import Callable
from typing import Any

Handler = Callable[[dict[str, Any]], dict[str, Any]]
_MAX_REQUEST = 64 * 1024


def proc_groups(status_text: str) -> set[int] | None:
    """The ``Groups:`` of a /proc/PID/status text (None when there is no such line)."""
    for line in status_text.splitlines():
        if line.startswith("Groups:"):
            return {int(g) for g in line.split()[1:] if g.isdigit()}
    return None


def peer_groups(pid: int, uid: int, gid: int) -> set[int]:
    """The supplementary groups of a peer (SO_PEERCRED gives only uid and gid): the process's own, from
    /proc/PID/status (checked to still belong to ``uid``), else the group database's for the user."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as fh:
            text = fh.read()
        uids = next((line.split()[1:] for line in text.splitlines() if line.startswith("Uid:")), [])
        groups = proc_groups(text)
        if groups is not None and uids and all(u == str(uid) for u in uids):
            return groups
    except OSError:
        pass  # ProtectProc=invisible hides other users' processes: ask the group database
    try:
        return set(os.getgrouplist(pwd.getpwuid(uid).pw_name, gid))
    except (KeyError, OSError):
        return set()


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
        pid, uid, gid = struct.unpack("3i", creds)
        if uid == 0 or uid == os.getuid():
            return True
        return self.gid is not None and (gid == self.gid or self.gid in peer_groups(pid, uid, gid))

    def serve_one(self) -> None:
        try:
            conn, _ = self.sock.accept()
        except (BlockingIOError, InterruptedError):
            return
        with conn:
            conn.settimeout(2.0)
            try:
                if not self._allowed(conn):
                    # refused at once, before reading: a peer that may not talk to us cannot hold the loop
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
        try:
            s.sendall(json.dumps(req).encode() + b"\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the responder answered early (a refusal, an oversize request): its answer is still to be read
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
