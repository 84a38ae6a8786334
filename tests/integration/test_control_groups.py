"""The control socket's --group honours supplementary groups (SO_PEERCRED gives only uid and gid)."""

from __future__ import annotations

import grp
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from portsentinel.responder.adapters.control import ControlServer, proc_groups
from tests.lab.detector import tool

pytestmark = pytest.mark.lab

CLIENT = ("import json, socket, sys\ns = socket.socket(socket.AF_UNIX)\ns.connect(sys.argv[1])\n"
          "s.sendall(b'{\"cmd\": \"status\"}\\n')\nprint(s.makefile().readline().strip())\n")


@pytest.fixture
def server() -> Iterator[tuple[ControlServer, Path]]:
    d = Path(tempfile.mkdtemp(prefix="portsentinel-ctl-"))
    d.chmod(0o755)

    def handler(req: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "cmd": req.get("cmd")}

    srv = ControlServer(str(d / "ctl.sock"), handler, group="adm")
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            srv.serve_one()
            stop.wait(0.01)

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    yield srv, d / "ctl.sock"
    stop.set()
    t.join(5)
    srv.close()
    shutil.rmtree(d)


def _as_nobody(sock: Path, groups: list[str]) -> str:
    grp_args = ["--groups", ",".join(groups)] if groups else ["--clear-groups"]
    out = subprocess.run(["setpriv", "--reuid", "65534", "--regid", "65534", *grp_args, tool("python"), "-c", CLIENT,
                          str(sock)], capture_output=True, text=True, timeout=30, cwd="/")
    return out.stdout.strip() + out.stderr.strip()[-300:]


def test_a_supplementary_member_of_the_group_is_allowed(server: tuple[ControlServer, Path]) -> None:
    _, sock = server
    adm = str(grp.getgrnam("adm").gr_gid)
    assert '"ok": true' in _as_nobody(sock, [adm])  # primary gid 65534, adm only as a supplementary group
    assert '"ok": true' not in _as_nobody(sock, [])  # neither: refused (by the socket's mode, 0660 root:adm)


def test_proc_groups_reads_the_groups_line() -> None:
    assert proc_groups("Name:\tx\nUid:\t1\t1\t1\t1\nGroups:\t4 24 27 \n") == {4, 24, 27}
    assert proc_groups("Groups:\t\n") == set() and proc_groups("Name:\tx\n") is None
