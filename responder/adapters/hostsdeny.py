"""A locked, atomic edit of a hosts.deny-style file: PortSentry's ``ALL: <ip>`` lines.

The file is locked with ``flock`` (on the file itself, the lock TCP wrappers' own tools would honour), the new
text is written to a temporary file in the same directory, fsynced, given the old file's mode and owner, and
renamed over it, so a reader sees either the old or the new file, never half of one. Adding an address that is
present, or removing one that is absent, changes nothing (idempotent). Only canonical addresses are written.

Each line the responder writes follows its marker line (:data:`MARKER`), and only marked lines are ever
removed: an admin's own ``ALL: <ip>`` line stays (and makes an add a no-op), and the package's postrm finds
exactly what the responder left. Where only the file is writable (systemd ``ReadWritePaths=/etc/hosts.deny``
bind-mounts it, so neither a temporary file in /etc nor a rename over a mount point is possible), the new text
is written in place under the same lock: an addition only appends, so a reader sees the old lines whole.
"""

from __future__ import annotations

import errno
import fcntl
import ipaddress
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from portsentinel.record import canonical_address, canonical_network

DEFAULT_FILE = "/etc/hosts.deny"
DEFAULT_DAEMON = "ALL"
#: The comment line above every line the responder adds (packaging/debian/portsentinel.postrm knows it too).
MARKER = "# portsentinel-responder ban"
#: Why a temporary file or a rename in the file's directory can fail while the file itself is writable.
_IN_PLACE_ERRNOS = frozenset({errno.EROFS, errno.EACCES, errno.EPERM, errno.EBUSY, errno.EXDEV})


def _canonical(ip: str) -> str:
    """A plain address (portsentinel.record.canonical_address: no zone id, no blank, no control character), or
    a network ban: hosts_access(5) net/mask (IPv4) and [net]/prefixlen (IPv6)."""
    if "/" in ip:
        net = ipaddress.ip_network(canonical_network(ip))
        if isinstance(net, ipaddress.IPv6Network):
            return f"[{net.network_address}]/{net.prefixlen}"
        return f"{net.network_address}/{net.netmask}"
    addr = canonical_address(ip)
    return f"[{addr}]" if ":" in addr else addr  # hosts_access(5): IPv6 addresses in brackets


def _line(daemon: str, ip: str) -> str:
    if not daemon or any(c in daemon for c in ":\n\r#") or daemon.strip() != daemon:
        raise ValueError(f"bad daemon list {daemon!r}")
    return f"{daemon}: {_canonical(ip)}"


def _same(line: str, wanted: str) -> bool:
    return " ".join(line.split()) == " ".join(wanted.split())


def edit(path: str | Path, ip: str, *, add: bool, daemon: str = DEFAULT_DAEMON) -> bool:
    """Add (or remove) ``daemon: ip`` in ``path``; True when the file changed."""
    wanted = _line(daemon, ip)
    path = Path(path)
    fd = _lock(path)
    try:
        with open(fd, encoding="utf-8", errors="surrogateescape", closefd=False) as fh:
            old = fh.read()
        lines = old.splitlines()
        if add:
            if any(_same(line, wanted) for line in lines):
                return False  # ours already, or the admin's own line
            new_lines = [*lines, MARKER, wanted]
        else:
            new_lines = without_marked(lines, lambda line: _same(line, wanted))
            if new_lines == lines:
                return False
        _replace(path, fd, "".join(line + "\n" for line in new_lines))
        return True
    finally:
        os.close(fd)  # releases the lock


def without_marked(lines: list[str], which: Callable[[str], bool]) -> list[str]:
    """``lines`` less each marked pair (:data:`MARKER`, then a line ``which`` accepts)."""
    out: list[str] = []
    i = 0
    while i < len(lines):
        if lines[i].strip() == MARKER and i + 1 < len(lines) and which(lines[i + 1]):
            i += 2
            continue
        out.append(lines[i])
        i += 1
    return out


def _lock(path: Path) -> int:
    """Open and flock ``path``; retry when another writer replaced the file while we waited."""
    for _ in range(100):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)
    raise OSError(f"{path}: could not lock (replaced repeatedly)")


def _in_place(locked_fd: int, text: str) -> None:
    data = text.encode("utf-8", "surrogateescape")
    os.pwrite(locked_fd, data, 0)
    os.ftruncate(locked_fd, len(data))
    os.fsync(locked_fd)


def _replace(path: Path, locked_fd: int, text: str) -> None:
    st = os.fstat(locked_fd)
    try:
        tmp_fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as exc:
        if exc.errno not in _IN_PLACE_ERRNOS:
            raise
        _in_place(locked_fd, text)  # only the file is writable (ReadWritePaths=/etc/hosts.deny)
        return
    try:
        with open(tmp_fd, "w", encoding="utf-8", errors="surrogateescape") as fh:
            fh.write(text)
            fh.flush()
            os.fchmod(fh.fileno(), st.st_mode & 0o7777)
            try:
                os.fchown(fh.fileno(), st.st_uid, st.st_gid)
            except PermissionError:
                pass  # not root: keep our own ownership
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        _unlink(tmp)
        if exc.errno not in _IN_PLACE_ERRNOS:
            raise
        _in_place(locked_fd, text)  # the file is a mount point (a bind mount): rename cannot replace it
        return
    except BaseException:
        _unlink(tmp)
        raise
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def contains(path: str | Path, ip: str, *, daemon: str = DEFAULT_DAEMON) -> bool:
    """True when ``path`` holds the line for ``ip``."""
    wanted = _line(daemon, ip)
    try:
        text = Path(path).read_text(encoding="utf-8", errors="surrogateescape")
    except FileNotFoundError:
        return False
    return any(_same(line, wanted) for line in text.splitlines())
