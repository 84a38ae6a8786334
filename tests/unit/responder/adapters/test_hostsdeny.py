"""hosts.deny edits: marked lines only, admins' lines kept, in place where only the file is writable."""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

import pytest

from portsentinel.responder.adapters import hostsdeny as H

MARK = H.MARKER


def test_marked_lines_are_added_and_only_they_are_removed(tmp_path: Path) -> None:
    deny = tmp_path / "hosts.deny"
    deny.write_text(f"# admin\nALL: 192.0.2.7\nsshd: 192.0.2.8\n{MARK}\nALL: 192.0.2.9\n")
    assert not H.edit(deny, "192.0.2.7", add=True)  # the admin's own line: nothing added…
    assert not H.edit(deny, "192.0.2.7", add=False)  # …and never removed
    assert H.edit(deny, "2001:db8::7", add=True) and not H.edit(deny, "2001:db8::7", add=True)
    assert H.edit(deny, "192.0.2.9", add=False)
    assert deny.read_text() == f"# admin\nALL: 192.0.2.7\nsshd: 192.0.2.8\n{MARK}\nALL: [2001:db8::7]\n"


@pytest.mark.parametrize("bad", ["fe80::1%x]\nALL: ALL\n#", "192.0.2.1\nALL: ALL", "[::1]", "ALL"])
def test_hostile_addresses_are_refused_before_the_file_is_touched(tmp_path: Path, bad: str) -> None:
    deny = tmp_path / "hosts.deny"
    deny.write_text("# untouched\n")
    with pytest.raises(ValueError):
        H.edit(deny, bad, add=True)
    assert deny.read_text() == "# untouched\n"


@pytest.mark.parametrize("where", ["mkstemp", "replace"])
def test_written_in_place_when_the_directory_or_the_rename_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    """ReadWritePaths=/etc/hosts.deny: /etc is read-only (EROFS) and the file is a mount point (EBUSY)."""
    deny = tmp_path / "hosts.deny"
    deny.write_text("# admin\n")
    inode = deny.stat().st_ino

    def refuse(*_a: object, **_k: object) -> None:
        raise OSError(errno.EROFS if where == "mkstemp" else errno.EBUSY, "refused")

    monkeypatch.setattr(tempfile if where == "mkstemp" else os, where, refuse)
    assert H.edit(deny, "192.0.2.1", add=True) and H.edit(deny, "192.0.2.2", add=True)
    assert H.edit(deny, "192.0.2.1", add=False)
    assert deny.read_text() == f"# admin\n{MARK}\nALL: 192.0.2.2\n" and deny.stat().st_ino == inode
    assert sorted(os.listdir(tmp_path)) == ["hosts.deny"]


def test_other_errors_are_not_hidden(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    deny = tmp_path / "hosts.deny"
    deny.write_text("")

    def full(*_a: object, **_k: object) -> None:
        raise OSError(errno.ENOSPC, "full")

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(OSError, match="full"):
        H.edit(deny, "192.0.2.1", add=True)
    assert deny.read_text() == "" and sorted(os.listdir(tmp_path)) == ["hosts.deny"]
