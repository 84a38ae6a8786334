"""FileSource on real files in tmp_path, with real inotify."""

from __future__ import annotations

import os
import select
from collections.abc import Iterator
from pathlib import Path

import pytest

from portsentinel import record as R
from portsentinel.responder.adapters.file_source import MAX_LINE, FileSource
from portsentinel.responder.core.sources import Entry


def rec(src: str, port: int = 143) -> str:
    fields = {R.F_MESSAGE: R.alert_message("syn", src, "tcp", port), R.F_EVENT: "scan", R.F_SRC: src,
              R.F_PROTO: "tcp", R.F_PORT: str(port), R.F_IDENT: R.DETECTOR_IDENTIFIER}
    return R.to_json_line(R.validate(fields))


def append(path: Path, text: str) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(text)


def readable(src: FileSource, timeout: float = 2.0) -> bool:
    return bool(select.select([src], [], [], timeout)[0])


def pump(src: FileSource, limit: int = 1024) -> list[Entry]:
    src.process()
    return src.read(limit)


@pytest.fixture
def jsonl(tmp_path: Path) -> Iterator[tuple[Path, FileSource]]:
    path = tmp_path / "alerts.jsonl"
    path.write_text(rec("192.0.2.1"))  # old: not replayed after seek(None)
    os.chmod(path, 0o644)
    src = FileSource(str(path), kind="jsonl", name="t")
    yield path, src
    src.close()


def srcs(entries: list[Entry]) -> list[str]:
    return [e.fields[R.F_SRC] for e in entries]


def test_append_is_read_and_wakes_the_descriptor(jsonl: tuple[Path, FileSource]) -> None:
    path, src = jsonl
    assert not readable(src, 0.05)  # idle: nothing to do
    assert pump(src) == []
    append(path, rec("192.0.2.2") + rec("2001:db8::7"))
    assert readable(src)
    entries = pump(src)
    assert srcs(entries) == ["192.0.2.2", "2001:db8::7"]
    assert all(e.trusted and not e.error and e.line == "" for e in entries)
    assert not readable(src, 0.05)  # process() consumed the events


def test_partial_line_waits_for_its_end(jsonl: tuple[Path, FileSource]) -> None:
    path, src = jsonl
    line = rec("192.0.2.3")
    append(path, line[:20])
    assert pump(src) == []
    append(path, line[20:-1])
    assert pump(src) == []
    append(path, "\n")
    assert srcs(pump(src)) == ["192.0.2.3"]


def test_limit_bounds_one_read(jsonl: tuple[Path, FileSource]) -> None:
    path, src = jsonl
    append(path, "".join(rec(f"192.0.2.{i}") for i in range(10, 20)))
    first = pump(src, limit=4)
    assert len(first) == 4
    rest = src.read(100)
    assert srcs(first + rest) == [f"192.0.2.{i}" for i in range(10, 20)]


def test_rotation_finishes_old_inode_then_new_from_zero(jsonl: tuple[Path, FileSource]) -> None:
    path, src = jsonl
    append(path, rec("192.0.2.4"))
    with open(path, "a", encoding="utf-8") as writer:  # a writer that still holds the old inode
        path.rename(path.with_suffix(".jsonl.1"))
        path.write_text("")
        assert readable(src)
        assert srcs(pump(src)) == ["192.0.2.4"]
        writer.write(rec("192.0.2.5"))  # written to the old inode after the rename
        writer.flush()
        assert srcs(pump(src)) == ["192.0.2.5"]
    append(path, rec("192.0.2.6"))  # the writer has moved on to the new file
    entries = pump(src)
    assert srcs(entries) == ["192.0.2.6"]
    dev, ino = os.stat(path).st_dev, os.stat(path).st_ino
    assert entries[-1].cursor == f"{dev}:{ino}:{len(rec('192.0.2.6'))}"


def test_rotation_with_old_partial_line_and_new_data_in_one_go(jsonl: tuple[Path, FileSource]) -> None:
    path, src = jsonl
    append(path, rec("192.0.2.7") + rec("192.0.2.8")[:-1])  # no newline at the end of the old file
    path.rename(path.with_suffix(".jsonl.1"))
    path.write_text(rec("192.0.2.9"))
    assert srcs(pump(src)) == ["192.0.2.7", "192.0.2.8", "192.0.2.9"]


def test_deleted_then_recreated(jsonl: tuple[Path, FileSource]) -> None:
    path, src = jsonl
    path.unlink()
    assert pump(src) == []
    path.write_text(rec("192.0.2.10"))
    assert readable(src)
    assert srcs(pump(src)) == ["192.0.2.10"]


def test_truncation_reads_from_zero(jsonl: tuple[Path, FileSource]) -> None:
    path, src = jsonl
    append(path, rec("192.0.2.11") + rec("192.0.2.12"))
    assert len(pump(src)) == 2
    with open(path, "w", encoding="utf-8") as fh:  # copytruncate style
        fh.write(rec("192.0.2.13"))
    assert srcs(pump(src)) == ["192.0.2.13"]


def test_late_creation_and_late_directory(tmp_path: Path) -> None:
    path = tmp_path / "later" / "deeper" / "alerts.jsonl"
    src = FileSource(str(path), kind="jsonl")
    try:
        assert pump(src) == []
        path.parent.mkdir(parents=True)
        assert readable(src)
        assert pump(src) == []
        path.write_text(rec("192.0.2.14"))
        assert readable(src)
        assert srcs(pump(src)) == ["192.0.2.14"]  # a file that appears is read from its start
        append(path, rec("192.0.2.15"))
        assert readable(src)
        assert srcs(pump(src)) == ["192.0.2.15"]
    finally:
        src.close()


def test_cursor_resume_exactly_once(tmp_path: Path) -> None:
    path = tmp_path / "alerts.jsonl"
    path.write_text("".join(rec(f"192.0.2.{i}") for i in range(1, 6)))
    src = FileSource(str(path), kind="jsonl")
    src.seek(f"{os.stat(path).st_dev}:{os.stat(path).st_ino}:0")
    first = src.read(2)
    assert srcs(first) == ["192.0.2.1", "192.0.2.2"]
    src.close()
    append(path, rec("192.0.2.6"))
    again = FileSource(str(path), kind="jsonl")
    again.seek(first[-1].cursor)
    assert srcs(again.read()) == [f"192.0.2.{i}" for i in range(3, 7)]
    # the inode changed while stopped: the new file from 0
    path.rename(tmp_path / "old.jsonl")
    path.write_text(rec("192.0.2.7"))
    again.seek(first[-1].cursor)
    assert srcs(again.read()) == ["192.0.2.7"]
    # a cursor beyond the end of the same inode (truncated while stopped): from 0
    st = os.stat(path)
    again.seek(f"{st.st_dev}:{st.st_ino}:999999")
    assert srcs(again.read()) == ["192.0.2.7"]
    # a malformed cursor: the end, nothing replayed
    again.seek("garbage")
    assert again.read() == []
    again.close()


def test_seek_end_keeps_a_line_being_written(tmp_path: Path) -> None:
    path = tmp_path / "alerts.jsonl"
    line = rec("192.0.2.16")
    path.write_text(rec("192.0.2.1") + line[:15])
    src = FileSource(str(path), kind="jsonl")
    try:
        append(path, line[15:])
        assert srcs(pump(src)) == ["192.0.2.16"]
    finally:
        src.close()


def test_bad_json_line_names_file_line_and_field(jsonl: tuple[Path, FileSource]) -> None:
    path, src = jsonl
    bad_src = '{"MESSAGE":"x","PS_SRC":"not-an-ip"}\n'
    append(path, "{not json\n" + bad_src + '{"MESSAGE":"x","_UID":"0"}\n' + "\n" + rec("192.0.2.17"))
    entries = pump(src)
    assert [bool(e.error) for e in entries] == [True, True, True, False]
    assert entries[0].fields == {} and entries[0].error.startswith(f"{path}:")
    assert "PS_SRC" in entries[1].error and "_UID" in entries[2].error
    assert not entries[0].trusted and entries[3].trusted
    # line numbers are known when the file was read from its start
    again = FileSource(str(path), kind="jsonl")
    again.seek(f"{os.stat(path).st_dev}:{os.stat(path).st_ino}:0")
    errors = [e.error for e in again.read() if e.error]
    again.close()
    assert errors[0].startswith(f"{path}:2: *: not JSON")
    assert errors[1].startswith(f"{path}:3: PS_SRC:")


def test_long_line_is_cut_and_reported(tmp_path: Path) -> None:
    path = tmp_path / "auth.log"
    path.write_text("")
    src = FileSource(str(path), kind="text")
    try:
        append(path, "x" * (MAX_LINE + 10000))
        cut = pump(src)
        assert len(cut) == 1 and cut[0].error and "longer than" in cut[0].error
        assert len(cut[0].line) == MAX_LINE
        append(path, "y" * 100 + "\nsshd[1]: Failed password for root from 192.0.2.18 port 22\n")
        assert [e.line for e in pump(src)] == ["sshd[1]: Failed password for root from 192.0.2.18 port 22"]
    finally:
        src.close()


def test_text_lines(tmp_path: Path) -> None:
    path = tmp_path / "auth.log"
    path.write_text("old line\n")
    src = FileSource(str(path), kind="text")
    try:
        append(path, "one\r\ntwo \xe9\n\n")
        entries = pump(src)
        assert [e.line for e in entries] == ["one", "two \xe9", ""]
        assert all(e.fields == {} and not e.error for e in entries)
    finally:
        src.close()


def test_invalid_utf8_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "auth.log"
    path.write_bytes(b"")
    src = FileSource(str(path), kind="text")
    try:
        with open(path, "ab") as fh:
            fh.write(b"bad \xff byte\n")
        assert [e.line for e in pump(src)] == ["bad \ufffd byte"]
    finally:
        src.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_trust_by_owner_mode_and_symlink(tmp_path: Path) -> None:
    path = tmp_path / "alerts.jsonl"
    path.write_text("")
    os.chmod(path, 0o644)

    sources = {name: FileSource(str(path), kind="jsonl", expected_uid=uid)
               for name, uid in (("any", None), ("root", 0), ("nobody", 65534))}
    link = tmp_path / "link.jsonl"
    link.symlink_to(path)
    sources["link"] = FileSource(str(link), kind="jsonl", expected_uid=0)

    def trusted() -> dict[str, bool]:
        append(path, rec("192.0.2.19"))
        seen = {name: pump(src) for name, src in sources.items()}
        assert all(len(entries) == 1 for entries in seen.values())
        return {name: entries[0].trusted for name, entries in seen.items()}

    try:
        assert trusted() == {"any": True, "root": True, "nobody": False, "link": False}
        os.chmod(path, 0o664)  # group-writable: checked again at each read
        assert trusted() == {"any": False, "root": False, "nobody": False, "link": False}
        os.chmod(path, 0o646)
        assert not any(trusted().values())
        os.chmod(path, 0o640)
        os.chown(path, 65534, 65534)
        assert trusted() == {"any": False, "root": False, "nobody": True, "link": False}
    finally:
        for s in sources.values():
            s.close()


def test_not_a_regular_file_is_not_read(tmp_path: Path) -> None:
    path = tmp_path / "fifo"
    os.mkfifo(path)
    src = FileSource(str(path), kind="text")  # must not block on open
    try:
        assert pump(src) == []
    finally:
        src.close()


def test_bad_kind() -> None:
    with pytest.raises(ValueError):
        FileSource("/nonexistent/x", kind="xml")  # type: ignore[arg-type]


def test_a_bulk_of_lines_mixed_with_bad_and_non_ascii_ones(jsonl: tuple[Path, FileSource]) -> None:
    """Thousands of lines at once (read as one block while they are ASCII): each bad line still names its file:line
    and field, a non-ASCII line is read line by line, and every cursor is the byte offset after its own line."""
    path, src = jsonl
    start = path.stat().st_size
    lines = [rec(f"198.51.{i // 256}.{i % 256}") for i in range(3000)]
    lines[1000] = '{"MESSAGE": "x", "PS_SRC": "300.1.1.1"}\n'
    lines[2000] = rec("198.51.100.9").replace("attackalert", "attackalert é")
    lines[2500] = "\r\n"  # blank: nothing
    append(path, "".join(lines))
    got = pump(src, 10_000)
    assert len(got) == 2999
    bad_at = start + len("".join(lines[:1000]).encode())  # (resumed at the end: no line numbers, the offset)
    assert [e.error for e in got if e.error] == [f"{path}:@{bad_at}: PS_SRC: not an IP address: '300.1.1.1'"]
    offsets = [int(e.cursor.rsplit(":", 1)[1]) for e in got]
    want, at = [], start
    for i, line in enumerate(lines):
        at += len(line.encode())
        if i != 2500:
            want.append(at)
    assert offsets == want
    assert "é" in got[2000].fields[R.F_MESSAGE] and got[2000].fields[R.F_SRC] == "198.51.100.9"
    assert got[2998].fields[R.F_SRC] == f"198.51.{2999 // 256}.{2999 % 256}"
