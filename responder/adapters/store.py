"""Bans, pending unbans, offence counts and source cursors in sqlite (WAL). The one module that imports sqlite3.

A ban and the cursor of the entry that caused it are written in one transaction, before the action runs:
after a crash the ban is in the database (and re-applied at start) and the entry is not acted on twice.
An unban moves the ban's row to ``unbans`` in one transaction before its actions run, and the row goes only
when every action has succeeded: after a crash at any point the unban is still pending and is run again at start
(actions are idempotent), so nothing stays in force that nothing will lift.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
from collections.abc import Iterable, Iterator

from portsentinel.responder.core.bans import Ban

_SCHEMA = """
CREATE TABLE IF NOT EXISTS bans (
    jail TEXT NOT NULL, ip TEXT NOT NULL, banned_at REAL NOT NULL, expires REAL NOT NULL,
    count INTEGER NOT NULL, failures INTEGER NOT NULL, info TEXT NOT NULL,
    PRIMARY KEY (jail, ip));
CREATE INDEX IF NOT EXISTS bans_expires ON bans (expires);
CREATE TABLE IF NOT EXISTS offences (
    jail TEXT NOT NULL, ip TEXT NOT NULL, count INTEGER NOT NULL, last REAL NOT NULL,
    PRIMARY KEY (jail, ip));
CREATE TABLE IF NOT EXISTS cursors (source TEXT PRIMARY KEY, cursor TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS unbans (
    jail TEXT NOT NULL, ip TEXT NOT NULL, banned_at REAL NOT NULL, expires REAL NOT NULL,
    count INTEGER NOT NULL, failures INTEGER NOT NULL, info TEXT NOT NULL, reason TEXT NOT NULL, since REAL NOT NULL,
    PRIMARY KEY (jail, ip));
"""

_BAN_COLS = "jail, ip, banned_at, expires, count, failures, info"
#: A ban's info as stored: json.dumps(info, sort_keys=True)'s text. ``JSONEncoder.encode`` makes its C encoder
#: again on every call; made once here (100,000 at once), the same text (tests/unit/responder/adapters/test_store.py).
_c_encoder = getattr(json.encoder, "c_make_encoder", None)
_encode = None if _c_encoder is None else _c_encoder(None, None, json.encoder.encode_basestring_ascii, None, ": ",
                                                      ", ", True, False, True)
_slow_text = json.JSONEncoder(sort_keys=True).encode


def _info_text(info: dict[str, str]) -> str:
    return _slow_text(info) if _encode is None else "".join(_encode(info, 0))


def _infos_text(info: dict[str, str], texts: dict[tuple[tuple[str, str], ...], str]) -> str:
    """:func:`_info_text`, remembered in ``texts`` for the infos of one commit that repeat (a local jail's port,
    protocol, scan kind); a remote ban's info (its origin's end time: never twice the same) as the text around
    its end time, remembered for the others that differ only there (a catch-up: a few origins)."""
    until = info.get("origin_until")
    if until is not None:
        if not _UNTIL.fullmatch(until):
            return _info_text(info)
        key = (("origin_until", ""), *[item for item in info.items() if item[0] != "origin_until"])
        around = texts.get(key)
        if around is None:
            around = _info_text({**info, "origin_until": _MARK})
            texts[key] = around = around if around.count(_MARK) == 1 else ""  # (another value holds the mark)
        if not around:
            return _info_text(info)
        head, _, tail = around.partition(_MARK)
        return head + until + tail
    key = tuple(info.items())
    text = texts.get(key)
    if text is None:
        text = texts[key] = _info_text(info)
    return text


#: A remote ban's end time as its info holds it (f"{until:.3f}"): JSON text as it is.
_UNTIL = re.compile(r"[0-9]{1,12}\.[0-9]{3}")
#: Stands for the end time in the remembered text around it (no info value holds it).
_MARK = "@@until@@"

#: Offence counts looked up per statement (sqlite's default limit of host parameters is far above).
_LOOKUP = 500


def _ban(row: tuple[str, str, float, float, int, int, str], infos: dict[str, dict[str, str]] | None = None) -> Ban:
    """A ban from its row; ``infos`` caches parsed info texts (a restore of 100,000 bans has few distinct ones)."""
    j, ip, at, exp, cnt, fail, info = row
    if infos is None:
        return Ban(j, ip, at, exp, cnt, fail, json.loads(info))
    parsed = infos.get(info)
    if parsed is None:
        parsed = infos[info] = json.loads(info)
    return Ban(j, ip, at, exp, cnt, fail, dict(parsed))  # each ban its own dict


def bans_of_rows(rows: list[tuple[str, str, float, float, int, int, str]],
                 infos: dict[str, dict[str, str]]) -> list[Ban]:
    """The bans of many rows at once (``infos`` caches parsed info texts across calls; each ban its own dict)."""
    for text in {row[6] for row in rows} - infos.keys():
        infos[text] = json.loads(text)
    return [Ban(j, ip, at, exp, cnt, fail, dict(infos[info])) for j, ip, at, exp, cnt, fail, info in rows]


class Store:
    def __init__(self, path: str) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(path)), mode=0o750, exist_ok=True)
        self.path = path
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(_SCHEMA)
        os.chmod(path, 0o640)

    def close(self) -> None:
        self.db.close()

    def bans(self) -> list[Ban]:
        infos: dict[str, dict[str, str]] = {}
        return [_ban(row, infos) for row in self.db.execute(f"SELECT {_BAN_COLS} FROM bans")]

    def ban_rows(self, size: int) -> Iterator[list[tuple[str, str, float, float, int, int, str]]]:
        """Every ban's row (jail, ip, banned_at, expires, count, failures, info text), ``size`` at a time, no Ban
        made (:func:`bans_of_rows` makes them). The read is one statement: take every chunk before writing to the
        store again."""
        cur = self.db.execute(f"SELECT {_BAN_COLS} FROM bans")
        while rows := cur.fetchmany(size):
            yield rows

    def expire(self, jails: Iterable[str], now: float, reason: str) -> int:
        """Bans of ``jails`` whose time ran out by ``now`` moved to the pending unbans (with ``reason``) in one
        transaction of two statements; how many. Their unbans then run like any pending one (a crash in between
        loses nothing: the next start finds them pending)."""
        names = sorted(set(jails))
        if not names:
            return 0
        marks = ",".join("?" * len(names))
        # two ranges of the index on expires (not the primary key's jail, which holds every row of the jail): the
        # expired rows are read, not the 1,000,000 others of a restore; -1 is a ban without end
        where = f"(expires < -1 OR (expires > -1 AND expires <= ?)) AND +jail IN ({marks})"
        with self.db:
            self.db.execute("BEGIN")
            self.db.execute(f"INSERT OR REPLACE INTO unbans SELECT {_BAN_COLS}, ?, ? FROM bans WHERE {where}",
                            (reason, now, now, *names))
            cur = self.db.execute(f"DELETE FROM bans WHERE {where}", (now, *names))
        return int(cur.rowcount)

    def unbans(self) -> list[tuple[Ban, str, float]]:
        """Pending unbans: (the ban, why it is lifted, since when), oldest first."""
        rows = self.db.execute(f"SELECT {_BAN_COLS}, reason, since FROM unbans ORDER BY since").fetchall()
        return [(_ban(row[:7]), str(row[7]), float(row[8])) for row in rows]

    def offences(self, jail: str, ip: str) -> int:
        row = self.db.execute("SELECT count FROM offences WHERE jail=? AND ip=?", (jail, ip)).fetchone()
        return int(row[0]) if row else 0

    def offences_many(self, jail: str, ips: Iterable[str]) -> dict[str, int]:
        """The offence counts of many addresses or networks of ``jail`` at once (a batch of entries): ip -> count,
        for those with a row."""
        todo = sorted(set(ips))
        out: dict[str, int] = {}
        for i in range(0, len(todo), _LOOKUP):
            part = todo[i:i + _LOOKUP]
            marks = ",".join("?" * len(part))
            rows = self.db.execute(f"SELECT ip, count FROM offences WHERE jail=? AND ip IN ({marks})", (jail, *part))
            out.update((str(ip), int(count)) for ip, count in rows)
        return out

    def start_cursor(self, source: str, cursor: str) -> str | None:
        """Commit where a source without a stored cursor starts; the reason when the store refused it."""
        try:
            self.commit(cursors={source: cursor})
        except sqlite3.Error as exc:
            return str(exc)
        return None

    def cursor(self, source: str) -> str | None:
        row = self.db.execute("SELECT cursor FROM cursors WHERE source=?", (source,)).fetchone()
        return str(row[0]) if row else None

    def commit(self, *, added: Iterable[Ban] = (), removed: Iterable[tuple[str, str]] = (),
               cursors: dict[str, str] | None = None, unbanning: Iterable[tuple[Ban, str]] = (),
               unbanned: Iterable[tuple[str, str]] = (), now: float = 0.0) -> None:
        """One transaction: new bans (with their offence counts; a pending unban of the same ban is dropped),
        bans whose unban starts (``unbanning``: moved to the pending unbans with the reason), unbans whose actions
        all succeeded (``unbanned``: the pending row goes), rows simply dropped (``removed``), source cursors."""
        with self.db:
            self.db.execute("BEGIN")
            for b, reason in unbanning:
                self.db.execute("DELETE FROM bans WHERE jail=? AND ip=?", (b.jail, b.ip))
                self.db.execute("INSERT OR REPLACE INTO unbans VALUES (?,?,?,?,?,?,?,?,?)",
                                (b.jail, b.ip, b.banned_at, b.expires, b.count, b.failures,
                                 _info_text(b.info), reason, now))
            for jail, ip in unbanned:
                self.db.execute("DELETE FROM unbans WHERE jail=? AND ip=?", (jail, ip))
            added = list(added)  # many at once (the bulk path): one statement each, run over all of them
            texts: dict[tuple[tuple[str, str], ...], str] = {}  # (a local jail's bans repeat a few infos)
            # (no pending unban at all, the common case of a big batch: nothing to drop for 100,000 new bans)
            if added and (len(added) < 64 or self.db.execute("SELECT 1 FROM unbans LIMIT 1").fetchone()):
                self.db.executemany("DELETE FROM unbans WHERE jail=? AND ip=?", [(b.jail, b.ip) for b in added])
            if added:
                self.db.executemany("INSERT OR REPLACE INTO bans VALUES (?,?,?,?,?,?,?)",
                                    [(b.jail, b.ip, b.banned_at, b.expires, b.count, b.failures,
                                      _infos_text(b.info, texts)) for b in added])
                counted = [(b.jail, b.ip, b.count, b.banned_at) for b in added if "origin" not in b.info]
                if counted:  # (a remote ban's offence is its origin's: no row of its own)
                    self.db.executemany("INSERT INTO offences VALUES (?,?,?,?) ON CONFLICT(jail, ip) DO UPDATE SET "
                                        "count=excluded.count, last=excluded.last", counted)
            for jail, ip in removed:
                self.db.execute("DELETE FROM bans WHERE jail=? AND ip=?", (jail, ip))
            for source, cur in (cursors or {}).items():
                self.db.execute("INSERT OR REPLACE INTO cursors VALUES (?,?)", (source, cur))
