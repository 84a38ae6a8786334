"""The watch position made durable off the event loop (docs/fleet.md, "Applying").

A batch of remote bans is written to the responder's file and the responder woken at once; the fdatasync that makes
the lines durable runs in a worker thread (under load it takes from a millisecond to hundreds: it must not hold up
the next entries, the spool or the watchdog), and only then are the batch's stream sequence and remote bans
committed to sqlite, in the same worker thread on a connection of its own (sqlite works without Python's lock, so
a catch-up's commits run beside the event loop). So the state never claims a sequence whose lines might not be on
disk: a crash replays at most what was written and not yet durable (the jail takes a repeated line as a renewal).

Batches flushed while a sync runs are merged (the last state of each ban, the last sequence) and committed after
the next sync, in order. Outside a running event loop (tools, benchmarks) the sync and the commit happen inline.
"""

from __future__ import annotations

import asyncio
import logging
import os

from . import codec as C
from .applier import BanId
from .output import RemoteOutput
from .store import Store, WatchWriter

log = logging.getLogger("portsentinel.fleet")


def _fdatasync(fd: int) -> None:
    try:
        os.fdatasync(fd)
    finally:
        os.close(fd)


class DurableCommits:
    def __init__(self, output: RemoteOutput, store: Store) -> None:
        self.output = output
        self.store = store
        self._seq: int | None = None
        self._changes: dict[BanId, C.Ban | None] = {}
        self._task: asyncio.Task[None] | None = None
        self._writer: WatchWriter | None = None

    @property
    def pending(self) -> bool:
        """A position or changes are waiting for their sync and commit."""
        return self._seq is not None or self._task is not None

    def add(self, seq: int, changes: dict[BanId, C.Ban | None]) -> None:
        """The position after a batch whose lines were just written, and the remote bans it changed (the dict is
        kept: the caller must not change it afterwards)."""
        self._seq = seq
        if self._changes:
            self._changes.update(changes)
        else:
            self._changes = changes
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.commit_now()
            return
        if self._task is None:
            self._task = loop.create_task(self._run())

    async def _run(self) -> None:
        try:
            while self._seq is not None:
                seq, changes = self._seq, self._changes
                self._seq, self._changes = None, {}
                try:
                    fd = self.output.sync_handle()  # covers every line written before this point
                    await asyncio.to_thread(self._sync_and_commit, fd, seq, changes)
                except Exception as exc:  # kept for the next batch's (or the next second's) attempt
                    self.output.sync_failed()
                    log.error("fleet: cannot make the watch position %d durable: %s: %s", seq,
                              type(exc).__name__, exc)
                    self._changes = {**changes, **self._changes}
                    if self._seq is None:
                        self._seq = seq
                    return
        finally:
            self._task = None

    def _sync_and_commit(self, fd: int, seq: int, changes: dict[BanId, C.Ban | None]) -> None:
        """In a worker thread: the lines made durable, then the position and the bans committed (sqlite works
        without Python's lock meanwhile)."""
        if fd >= 0:
            _fdatasync(fd)
        if self._writer is None:
            self._writer = self.store.watch_writer()
        self._writer.commit_watch(seq, changes.items())

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    async def wait(self) -> None:
        """Until everything added so far is durable and committed."""
        while self._task is not None:
            await asyncio.shield(self._task)
        if self._seq is not None:
            self.commit_now()

    def commit_now(self) -> None:
        """Sync and commit here (no running loop, or none to wait for)."""
        if self._task is not None:
            raise RuntimeError("a sync is running: await wait()")
        self.output.sync()
        if self._seq is not None:
            seq, changes = self._seq, self._changes
            self._seq, self._changes = None, {}
            self.store.commit_watch(seq, changes.items())
