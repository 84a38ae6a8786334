"""portsentinel.common.jsonlines on real files: what lands on disk, when it is synced, whole lines from several writers.

When a record is durable cannot be seen from user space without pulling the power, so the tests record each
``fdatasync`` call the writer makes, by the file its descriptor names at that moment (the real call still runs).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from portsentinel import record as R
from portsentinel.common.jsonlines import JsonLinesWriter

Syncs = list[str]


@pytest.fixture
def syncs(monkeypatch: pytest.MonkeyPatch) -> Syncs:
    """The files ``os.fdatasync`` was called on during the test (the path each descriptor named then)."""
    calls: Syncs = []
    real: Callable[[int], None] = os.fdatasync

    def counting(fd: int) -> None:
        calls.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fdatasync", counting)
    return calls


def scan(n: int, **extra: str) -> R.Record:
    return R.validate({R.F_MESSAGE: f"attackalert: SYN scan from host: 192.0.2.{n}/192.0.2.{n} to TCP port: 22",
                       R.F_IDENT: R.DETECTOR_IDENTIFIER, R.F_EVENT: "scan", R.F_SRC: f"192.0.2.{n}",
                       R.F_PORT: "22", R.F_PROTO: "tcp", R.F_SCAN: "syn", R.F_TIME: f"{1700000000 + n}.250000",
                       **extra})


def lines(path: Path) -> list[R.Record]:
    return [R.from_json_line(line) for line in path.read_text(encoding="ascii").splitlines()]


def test_each_record_is_one_line_that_reads_back_as_the_same_record(tmp_path: Path) -> None:
    path = tmp_path / "alerts.jsonl"
    w = JsonLinesWriter(str(path))
    odd = scan(1, PS_DETAIL='quote " backslash \\ newline \n tab \t é ☃ \x7f', PS_SRC_NAME="host.example")
    for rec in (scan(2), odd, scan(3)):
        w.write(rec)
    w.close()
    raw = path.read_bytes()
    assert raw.count(b"\n") == 3 and raw.isascii()  # escapes keep one record on one ASCII line
    assert lines(path) == [scan(2), odd, scan(3)]


def test_sync_true_syncs_every_record_before_write_returns(tmp_path: Path, syncs: Syncs) -> None:
    synced = str(tmp_path / "alerts.jsonl")
    w = JsonLinesWriter(synced, sync=True)
    for n in range(3):
        w.write(scan(n))
        assert syncs == [synced] * (n + 1)
    w.flush()
    w.close()
    assert syncs == [synced] * 3  # nothing left to sync at flush or close


def test_sync_false_syncs_once_per_flush(tmp_path: Path, syncs: Syncs) -> None:
    path = tmp_path / "decisions.jsonl"
    w = JsonLinesWriter(str(path), sync=False)
    synced = str(path)
    for n in range(5):
        w.write(scan(n))
    assert syncs == [] and len(lines(path)) == 5  # written (visible to readers), not yet synced
    w.flush()
    assert syncs == [synced]
    w.flush()  # nothing new: no second sync
    assert syncs == [synced]
    w.write(scan(9))
    w.close()  # close syncs what the last flush did not
    assert syncs == [synced, synced]


def test_a_rotated_file_is_synced_before_the_writer_moves_on(tmp_path: Path, syncs: Syncs) -> None:
    path = tmp_path / "decisions.jsonl"
    w = JsonLinesWriter(str(path), sync=False)
    w.write(scan(1))
    path.rename(tmp_path / "decisions.jsonl.1")
    w.write(scan(2))  # notices the rotation: the old file's pending record is synced first
    assert syncs == [str(tmp_path / "decisions.jsonl.1")]
    w.close()
    assert lines(tmp_path / "decisions.jsonl.1") == [scan(1)] and lines(path) == [scan(2)]
    path.unlink()
    w = JsonLinesWriter(str(path), sync=True)
    path.unlink()  # deleted under the writer: the next record makes a new file
    w.write(scan(3))
    w.close()
    assert lines(path) == [scan(3)] and path.stat().st_mode & 0o777 == 0o640


def test_an_existing_file_keeps_its_lines_and_its_mode(tmp_path: Path) -> None:
    path = tmp_path / "alerts.jsonl"
    path.write_text(R.to_json_line(scan(1)))
    path.chmod(0o600)  # an admin's choice on a file with content: kept
    w = JsonLinesWriter(str(path))
    w.write(scan(2))
    w.close()
    assert lines(path) == [scan(1), scan(2)] and path.stat().st_mode & 0o777 == 0o600


WRITER = """
import sys
from portsentinel import record as R
from portsentinel.common.jsonlines import JsonLinesWriter
w = JsonLinesWriter(sys.argv[1], sync=False)
for n in range(int(sys.argv[3])):
    w.write(R.validate({"MESSAGE": sys.argv[2] * 3000, "PS_EVENT": "scan", "PS_SEQ": str(n)}))
w.close()
"""


def test_lines_of_writers_in_several_processes_never_interleave(tmp_path: Path) -> None:
    """Each record is one append-mode write(): records of about 3 KB from three processes at once stay whole."""
    path = tmp_path / "shared.jsonl"
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), letter, "300"]) for letter in "abc"]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
    got = lines(path)
    assert len(got) == 900
    for letter in "abc":
        mine = [r for r in got if r.fields[R.F_MESSAGE] == letter * 3000]
        assert [int(r.fields["PS_SEQ"]) for r in mine] == list(range(300))  # whole, and in each writer's order


def test_a_write_cut_by_a_full_disk_leaves_one_garbage_line_and_loses_no_line(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch whose write stops inside a line (ENOSPC after a short write) is written whole again by the caller;
    the writer ends the cut line first, so only that line is garbage and every line of the batch reads back."""
    import errno

    path = tmp_path / "remote.jsonl"
    writer = JsonLinesWriter(str(path), sync=False)
    batch = "".join(json.dumps({"PS_EVENT": "ban", "PS_SRC": f"192.0.2.{i}"}) + "\n" for i in range(1, 9))
    real = os.write
    calls: list[int] = []

    def full_after_part(fd: int, data: bytes | memoryview) -> int:
        calls.append(len(data))
        if len(calls) == 1:
            return real(fd, bytes(data[:len(data) // 2 + 3]))  # a short write, inside a line
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full_after_part)
    with pytest.raises(OSError):
        writer.write_lines(batch)
    with pytest.raises(OSError):  # still full, nothing written at all this time
        writer.write_lines(batch)
    monkeypatch.setattr(os, "write", real)
    writer.write_lines(batch)
    writer.close()
    good, bad = [], []
    for line in path.read_text().splitlines():
        try:
            good.append(json.loads(line)["PS_SRC"])
        except ValueError:
            bad.append(line)
    assert len(bad) == 1
    assert good[-8:] == [f"192.0.2.{i}" for i in range(1, 9)]
