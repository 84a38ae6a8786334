"""A second process for a stateless stage of a big run (:func:`batch.examine_lines`'s regexes).

:meth:`Worker.start` forks; the child inherits the compiled filter and applies one function to each chunk it
is sent (a list of texts, marshalled), sending back the results (marshalled) in the order it got them.
:meth:`Worker.run` keeps a few chunks waiting for the child and does any other chunk itself, so neither process
waits for the other while there is work (on a busy machine the child may get no CPU for a while), and yields
each chunk with its results in the input's order. Nothing the child does is seen here but those results.

No deadlock: chunks are sent only while those not yet answered fit the pipe to the child (:data:`PIPE_SIZE`,
set with ``F_SETPIPE_SZ``), so writing never blocks; this process only ever waits for results. A child that
fails or dies ends the run with :class:`WorkerError`.
"""

from __future__ import annotations

import fcntl
import marshal
import os
import select
import signal
import traceback
from collections import deque
from collections.abc import Callable, Generator, Iterator
from typing import Any, BinaryIO, TypeVar

PIPE_SIZE = 1 << 20
#: Chunks the child may have waiting; and chunks done (or asked) and not yet used, at most, before this
#: process waits for the child's oldest answer.
AHEAD = 4
MAX_PENDING = 64
#: A chunk's size when marshalled, at most (batch's chunks: 64 Ki characters and one more line of 8 Ki, at up to
#: 4 bytes each in UTF-8, 5 bytes of framing per text, stay below this).
MAX_FRAME = PIPE_SIZE // 2
_HEADER = 8

Extra = TypeVar("Extra")


class WorkerError(RuntimeError):
    """The worker process failed (its traceback, or how it ended)."""


def cpus() -> int:
    """CPUs this process may run on."""
    return len(os.sched_getaffinity(0))


def spare_cpu() -> bool:
    """Whether a worker would find a CPU of its own: this process may use two or more, and the load average
    of the last minute (this process included) leaves one free. On a busy machine a worker only adds the cost
    of the pipe (measured: slower than one process, docs/performance.md)."""
    n = cpus()
    return n >= 2 and os.getloadavg()[0] <= n - 1


class Worker:
    """A forked child applying ``work`` to each chunk (see the module's text)."""

    def __init__(self, pid: int, to_child: BinaryIO, from_child: BinaryIO, work: Callable[[Any], Any]) -> None:
        self.pid = pid
        self._work = work
        self._ready = select.poll()  # poll, not select: any descriptor number
        self._ready.register(from_child.fileno(), select.POLLIN)
        self._to = to_child
        self._from = from_child
        self._done = False

    @classmethod
    def start(cls, work: Callable[[Any], Any]) -> Worker | None:
        """Fork the worker; None when the pipe cannot be made big enough (then do the work here)."""
        r_in, w_in = os.pipe()
        try:
            fcntl.fcntl(w_in, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
            big = fcntl.fcntl(w_in, fcntl.F_GETPIPE_SZ) >= PIPE_SIZE
        except OSError:
            big = False
        if not big:
            os.close(r_in)
            os.close(w_in)
            return None
        r_out, w_out = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: serve until told to stop, never return into the caller's code
            status = 1
            try:
                os.close(w_in)
                os.close(r_out)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                _serve(work, os.fdopen(r_in, "rb"), os.fdopen(w_out, "wb"))
                status = 0
            finally:
                os._exit(status)
        os.close(r_in)
        os.close(w_out)
        return cls(pid, os.fdopen(w_in, "wb"), os.fdopen(r_out, "rb", buffering=0), work)

    def run(self, chunks: Iterator[tuple[list[Any], Extra]]) -> Generator[tuple[list[Any], Extra, Any], None, None]:
        """Each chunk ``(items, extra)`` with ``work(items)`` done, in order. The child gets a chunk while it
        has fewer than :data:`AHEAD` waiting (and they fit the pipe); any other chunk is done here, so this
        process never waits for a child that gets no CPU (a busy machine), and the two share the work on an
        idle one. Closing the generator early stops the child."""
        pending: deque[list[Any]] = deque()  # [items, extra, result, done] in the input's order
        asked: deque[tuple[list[Any], int]] = deque()  # (entry, frame size) sent and not yet answered
        try:
            for items, extra in chunks:
                self._collect(asked, block=False)
                while pending and pending[0][3]:
                    done = pending.popleft()
                    yield done[0], done[1], done[2]
                entry: list[Any] = [items, extra, None, False]
                if len(asked) < AHEAD:
                    data = marshal.dumps(items)
                    size = _HEADER + len(data)
                    if size > MAX_FRAME:
                        raise WorkerError(f"a chunk of {len(data)} bytes is over {MAX_FRAME}")
                    if sum(n for _e, n in asked) + size <= PIPE_SIZE:
                        self._to.write(len(data).to_bytes(_HEADER, "little") + data)
                        self._to.flush()
                        asked.append((entry, size))
                if not asked or asked[-1][0] is not entry:
                    entry[2], entry[3] = self._work(items), True
                pending.append(entry)
                while len(pending) > MAX_PENDING and not pending[0][3]:
                    self._collect(asked, block=True)
            while pending:
                if not pending[0][3]:
                    self._collect(asked, block=True)
                done = pending.popleft()
                yield done[0], done[1], done[2]
            self._stop()
        finally:
            self.close()

    def _collect(self, asked: deque[tuple[list[Any], int]], block: bool) -> None:
        """The child's answers that are there (with ``block``: at least one), into their entries."""
        while asked and (block or self._ready.poll(0)):
            entry, _size = asked.popleft()
            entry[2], entry[3] = self._receive(), True
            block = False

    def _receive(self) -> Any:
        frame = _read_frame(self._from)
        if frame is None:
            raise WorkerError(f"the worker process {self.pid} ended early ({self._reap()})")
        ok, value = marshal.loads(frame)
        if not ok:
            raise WorkerError(f"the worker process {self.pid} failed:\n{value}")
        return value

    def _stop(self) -> None:
        self._to.write(bytes(_HEADER))
        self._to.flush()
        how = self._reap()
        if how != "exit status 0":
            raise WorkerError(f"the worker process {self.pid} ended with {how}")

    def _reap(self) -> str:
        if self._done:
            return "exit status 0"
        _pid, status = os.waitpid(self.pid, 0)
        self._done = True
        code = os.waitstatus_to_exitcode(status)
        return f"exit status {code}" if code >= 0 else f"signal {-code}"

    def close(self) -> None:
        """Stop the child if it still runs, and reap it."""
        for f in (self._to, self._from):
            try:
                f.close()
            except OSError:
                pass
        if not self._done:
            try:
                os.kill(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            self._reap()


def _serve(work: Callable[[Any], Any], inp: BinaryIO, out: BinaryIO) -> None:
    while True:
        frame = _read_frame(inp)
        if not frame:
            return
        try:
            reply = marshal.dumps((True, work(marshal.loads(frame))))
        except Exception:  # the caller raises it as WorkerError, with this traceback
            reply = marshal.dumps((False, traceback.format_exc()))
        out.write(len(reply).to_bytes(_HEADER, "little") + reply)
        out.flush()


def _read_frame(f: BinaryIO) -> bytes | None:
    """The next frame's bytes; b"" for the stop frame; None at the end of the stream."""
    head = _read_exactly(f, _HEADER)
    if head is None:
        return None
    return _read_exactly(f, int.from_bytes(head, "little"))


def _read_exactly(f: BinaryIO, size: int) -> bytes | None:
    """``size`` bytes (an unbuffered pipe may give fewer per read); None at the end of the stream."""
    data = f.read(size)
    if len(data) == size:
        return data
    parts = [data]
    got = len(data)
    while got < size:
        part = f.read(size - got)
        if not part:
            return None
        parts.append(part)
        got += len(part)
    return b"".join(parts)
