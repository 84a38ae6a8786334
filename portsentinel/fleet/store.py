"""The fleet daemon's state in sqlite: the outgoing spool, the watch position, the remote bans, own keys, cursor.

- **spool**: every put or delete this host owes the bucket, in order, until the cluster acknowledged it. One row
  per key (a newer operation on a key replaces an older one still waiting), at most ``spool_max`` rows (the
  oldest dropped and counted beyond that).
- **watch**: the last stream sequence applied and the remote bans it led to, committed in one transaction, so a
  restart resumes after that sequence with the same view (no replay of the bucket, nothing applied twice). A
  commit of many changes (a catch-up) is one row of ``remote_log`` instead of a row per ban (a sqlite row costs
  ~3 us, the batch's rows in ``marshal``'s binary form ~0.25 us each); once a log row exists every later commit
  goes there too (order), and the log is folded into ``remote`` at the next start (:meth:`Store.remote_bans`).
  The log is the daemon's own file's content: its rows are checked for shape and types when read, and a log
  that fails the check (or that another Python's ``marshal`` cannot read) resets the watch: a full catch-up.
- **own**: the keys this host has put and not deleted (a fleet-wide unban deletes them by address).
- **cursor**: where the decisions input stopped (journal cursor or file position).
"""

from __future__ import annotations

import logging
import marshal
import os
import sqlite3
from collections.abc import Iterable

from . import codec as C
from .applier import BanId
from .keys import UNBAN_JAIL

log = logging.getLogger("portsentinel.fleet")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS spool (id INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL UNIQUE, value BLOB,
                                  addr TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS remote (origin TEXT NOT NULL, jail TEXT NOT NULL, addr TEXT NOT NULL, until REAL NOT NULL,
                                   scan TEXT NOT NULL, verified INTEGER NOT NULL, offence INTEGER NOT NULL,
                                   at REAL NOT NULL, PRIMARY KEY (origin, jail, addr));
CREATE TABLE IF NOT EXISTS own (key TEXT PRIMARY KEY, addr TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS own_addr ON own (addr);
CREATE TABLE IF NOT EXISTS remote_log (id INTEGER PRIMARY KEY, rows BLOB NOT NULL);
"""

#: A commit of at least this many changes goes to ``remote_log`` as one row.
LOG_ROWS = 500

SpoolRow = tuple[int, str, bytes | None]


class Store:
    def __init__(self, path: str, spool_max: int) -> None:
        os.makedirs(os.path.dirname(path) or ".", mode=0o750, exist_ok=True)
        self.path = path
        self.spool_max = spool_max
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(_SCHEMA)
        #: Spooled operations dropped because the spool was full (since start).
        self.dropped = 0

    def close(self) -> None:
        self.db.close()

    # ------------------------------------------------------------------ meta
    def _get(self, name: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return None if row is None else str(row[0])

    def _set(self, name: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta (name, value) VALUES (?, ?)", (name, value))

    def last_seq(self) -> int:
        return int(self._get("last_seq") or 0)

    def cursor(self) -> str | None:
        return self._get("cursor")

    def set_cursor(self, cursor: str) -> None:
        self._set("cursor", cursor)

    # ------------------------------------------------------------------ spool
    def spool(self, ops: Iterable[tuple[str, bytes | None]]) -> int:
        """Queue (key, value or None for a delete) in order; returns how many were dropped for room."""
        with self.db:
            self.db.execute("BEGIN")
            for key, value in ops:
                self.db.execute("DELETE FROM spool WHERE key = ?", (key,))
                self.db.execute("INSERT INTO spool (key, value, addr) VALUES (?, ?, ?)",
                                (key, value, key.rsplit(".", 1)[-1]))
            over = self.spool_size() - self.spool_max
            if over > 0:
                self.db.execute("DELETE FROM spool WHERE id IN (SELECT id FROM spool ORDER BY id LIMIT ?)", (over,))
                self.dropped += over
        return max(over, 0)

    def spool_size(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM spool").fetchone()[0])

    def spooled(self, limit: int) -> list[SpoolRow]:
        rows = self.db.execute("SELECT id, key, value FROM spool ORDER BY id LIMIT ?", (limit,)).fetchall()
        return [(int(i), str(k), None if v is None else bytes(v)) for i, k, v in rows]

    def sent(self, rows: Iterable[SpoolRow]) -> None:
        """Acknowledged by the cluster: out of the spool, and the own-key list follows."""
        with self.db:
            self.db.execute("BEGIN")
            for row_id, key, value in rows:
                self.db.execute("DELETE FROM spool WHERE id = ?", (row_id,))
                if value is None:
                    self.db.execute("DELETE FROM own WHERE key = ?", (key,))
                else:
                    addr = key.rsplit(".", 1)[1]
                    self.db.execute("INSERT OR REPLACE INTO own (key, addr) VALUES (?, ?)", (key, addr))

    def own_keys(self, addr_token: str) -> list[str]:
        """This host's ban keys for an address (its key token), put and not deleted, or waiting in the spool; its
        fleet-wide unban markers are not among them (they must stand until their ``until``)."""
        rows = self.db.execute("SELECT key FROM own WHERE addr = ? UNION SELECT key FROM spool "
                               "WHERE addr = ? AND value IS NOT NULL", (addr_token, addr_token)).fetchall()
        return sorted(k for k in (str(r[0]) for r in rows) if k.split(".")[1] != UNBAN_JAIL)

    # ------------------------------------------------------------------ watch
    def remote_bans(self) -> list[tuple[str, C.Ban]]:
        """The remote bans of the last commit (the log folded into the table first)."""
        try:
            self.fold_log()
        except BadLog as exc:
            log.error("fleet: %s: the watch's log is unreadable (%s); starting a full catch-up", self.path, exc)
            self.reset_watch()
        rows = self.db.execute("SELECT origin, jail, addr, until, scan, verified, offence, at FROM remote")
        return [(str(o), C.Ban(str(a), str(j), float(u), str(s), int(v), int(n), float(t)))
                for o, j, a, u, s, v, n, t in rows]

    def commit_watch(self, seq: int, changes: Iterable[tuple[BanId, C.Ban | None]]) -> None:
        """The watch position and the remote bans it led to, atomically."""
        _commit_watch(self.db, seq, changes)

    def watch_writer(self) -> WatchWriter:
        """A second connection to the same database for :meth:`commit_watch` from a worker thread."""
        return WatchWriter(self.path)

    def reset_watch(self) -> None:
        """Forget the position and the view (the bucket's stream was made anew: a full catch-up follows)."""
        with self.db:
            self.db.execute("BEGIN")
            self.db.execute("DELETE FROM remote")
            self.db.execute("DELETE FROM remote_log")
            self._set("last_seq", "0")

    def fold_log(self) -> int:
        """``remote_log``'s rows applied to ``remote`` in order, and the log emptied, in one transaction; returns
        how many changes. :class:`BadLog` (nothing changed) when a row is not what :func:`_commit_watch` writes."""
        blobs = self.db.execute("SELECT rows FROM remote_log ORDER BY id").fetchall()
        if not blobs:
            return 0
        batches = [_log_rows(bytes(blob)) for (blob,) in blobs]
        with self.db:
            self.db.execute("BEGIN")
            for rows in batches:
                _write(self.db, rows)
            self.db.execute("DELETE FROM remote_log")
        return sum(len(rows) for rows in batches)


_INSERT_REMOTE = "INSERT OR REPLACE INTO remote (origin, addr, jail, until, scan, verified, offence, at) VALUES " \
                 "(?, ?, ?, ?, ?, ?, ?, ?)"


Row = tuple[str | float | int, ...]


class BadLog(ValueError):
    """A row of ``remote_log`` that is not a list of changes as :func:`_commit_watch` writes them."""


def _rows(changes: Iterable[tuple[BanId, C.Ban | None]]) -> list[Row]:
    """A removal as (origin, jail, addr); a ban as (origin, addr, jail, until, scan, verified, offence, at): the
    origin, then the ban's fields in their order."""
    return [bid if ban is None else (bid[0], *ban) for bid, ban in changes]


def _write(db: sqlite3.Connection, rows: list[Row]) -> None:
    db.executemany("DELETE FROM remote WHERE origin = ? AND jail = ? AND addr = ?", [r for r in rows if len(r) == 3])
    db.executemany(_INSERT_REMOTE, [r for r in rows if len(r) == 8])


_BAN_TYPES: tuple[tuple[type, ...], ...] = ((str,), (str,), (str,), (float, int), (str,), (int,), (int,), (float, int))


def _log_rows(blob: bytes) -> list[Row]:
    try:
        rows = marshal.loads(blob)
    except (ValueError, EOFError, TypeError) as exc:
        raise BadLog(f"not a marshal blob: {exc}") from None
    if type(rows) is not list:
        raise BadLog(f"a {type(rows).__name__}, not a list")
    for row in rows:
        if type(row) is not tuple or not (
                (len(row) == 3 and all(type(v) is str for v in row))
                or (len(row) == 8 and all(type(v) in t for v, t in zip(row, _BAN_TYPES, strict=True)))):
            raise BadLog(f"a row {str(row)[:80]!r}")
    return rows


def _commit_watch(db: sqlite3.Connection, seq: int, changes: Iterable[tuple[BanId, C.Ban | None]]) -> None:
    rows = _rows(changes)
    with db:
        db.execute("BEGIN")
        if len(rows) >= LOG_ROWS or db.execute("SELECT EXISTS (SELECT 1 FROM remote_log)").fetchone()[0]:
            db.execute("INSERT INTO remote_log (rows) VALUES (?)", (marshal.dumps(rows),))
        else:
            _write(db, rows)
        db.execute("INSERT OR REPLACE INTO meta (name, value) VALUES ('last_seq', ?)", (str(seq),))


class WatchWriter:
    """The watch position's own connection, used by one worker thread at a time (:mod:`.durable`): sqlite does the
    work without Python's lock, so a catch-up's commits run beside the event loop. WAL lets the daemon's main
    connection read meanwhile; a write of both waits for the other (busy timeout)."""

    def __init__(self, path: str) -> None:
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
        self.db.execute("PRAGMA synchronous=NORMAL")

    def commit_watch(self, seq: int, changes: Iterable[tuple[BanId, C.Ban | None]]) -> None:
        _commit_watch(self.db, seq, changes)

    def close(self) -> None:
        self.db.close()
