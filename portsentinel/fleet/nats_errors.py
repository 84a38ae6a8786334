"""A refused NATS operation, told apart from an unreachable cluster.

A publish the server's permissions deny is dropped by the server, which reports it only on the connection's
asynchronous error channel (``-ERR 'Permissions Violation for Publish to "SUBJECT"'``, nats-py's ``error_cb``); the
request waiting for JetStream's answer then times out exactly as it does when the cluster is down. Pass
:meth:`PermissionWatch.error_cb` to ``nats.connect(error_cb=…)``, take a :meth:`~PermissionWatch.mark` before an
operation, and :func:`classify` (or :func:`guarded`) its failure: ``denied`` (permissions; retrying will not help,
the credential or the key is wrong), ``rejected`` (the server answered with an error, e.g. a refused rollup),
``unreachable`` (no answer: spool and retry).
"""

from __future__ import annotations

import asyncio
import enum
import re
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from nats import errors as nats_errors
from nats.js import errors as js_errors

T = TypeVar("T")
ErrorCallback = Callable[[Exception], Awaitable[None]]

_VIOLATION = re.compile(r'permissions violation for (publish|subscription) to "?([^"\s]+)"?', re.IGNORECASE)


class Failure(enum.Enum):
    DENIED = "denied"
    REJECTED = "rejected"
    UNREACHABLE = "unreachable"


@dataclass(frozen=True)
class Violation:
    """One permission violation the server reported: ``publish`` or ``subscription`` to ``subject``."""

    kind: str
    subject: str
    seq: int


class FleetNatsError(Exception):
    """An operation on the cluster failed; ``failure`` says how."""

    failure: Failure = Failure.UNREACHABLE

    def __init__(self, subject: str, detail: str) -> None:
        super().__init__(f"{subject}: {self.failure.value}: {detail}")
        self.subject = subject
        self.detail = detail


class Denied(FleetNatsError):
    failure = Failure.DENIED


class Rejected(FleetNatsError):
    failure = Failure.REJECTED


class Unreachable(FleetNatsError):
    failure = Failure.UNREACHABLE


def parse_violation(text: str) -> tuple[str, str] | None:
    """``("publish", "$KV.b.k")`` from a server's permissions-violation text, else None."""
    m = _VIOLATION.search(text)
    if not m:
        return None
    return m.group(1).lower(), m.group(2)


class PermissionWatch:
    """Keeps the last ``keep`` permission violations a connection's error callback reported. Other errors go on
    to ``chain`` (e.g. the daemon's own logging callback).

    nats-py lower-cases the server's error line before the callback sees it, so a violation's subject is compared
    without regard to case: ``$KV.b.Host1.x`` and ``$KV.b.host1.x`` cannot be told apart from the report."""

    def __init__(self, chain: ErrorCallback | None = None, keep: int = 256) -> None:
        self._seq = 0
        self._seen: deque[Violation] = deque(maxlen=keep)
        self._chain = chain
        self._waiters: list[tuple[str | None, asyncio.Future[Violation]]] = []

    async def error_cb(self, exc: Exception) -> None:
        found = parse_violation(str(exc))
        if found is not None:
            self._seq += 1
            violation = Violation(found[0], found[1], self._seq)
            self._seen.append(violation)
            for subject, fut in self._waiters:
                if (subject is None or subject.lower() == violation.subject.lower()) and not fut.done():
                    fut.set_result(violation)
        elif self._chain is not None:
            await self._chain(exc)

    def waiter(self, subject: str | None) -> asyncio.Future[Violation]:
        """A future that a later violation for ``subject`` (any when None) completes; :meth:`forget` it after."""
        fut: asyncio.Future[Violation] = asyncio.get_running_loop().create_future()
        self._waiters.append((subject, fut))
        return fut

    def forget(self, fut: asyncio.Future[Violation]) -> None:
        self._waiters = [(s, f) for s, f in self._waiters if f is not fut]
        fut.cancel()

    def mark(self) -> int:
        """A point in the sequence of violations: :meth:`denied` looks only at later ones."""
        return self._seq

    def denied(self, subject: str | None, since: int, kind: str | None = None) -> Violation | None:
        """A violation after ``since`` for ``subject`` (any subject when None), of ``kind`` when given."""
        for v in reversed(self._seen):
            if v.seq <= since:
                break
            if (subject is None or v.subject.lower() == subject.lower()) and (kind is None or v.kind == kind):
                return v
        return None

    @property
    def violations(self) -> list[Violation]:
        return list(self._seen)


_UNREACHABLE: tuple[type[BaseException], ...] = (
    asyncio.TimeoutError, nats_errors.TimeoutError, nats_errors.NoServersError, nats_errors.ConnectionClosedError,
    nats_errors.ConnectionReconnectingError, nats_errors.OutboundBufferLimitError, nats_errors.NoRespondersError,
    nats_errors.StaleConnectionError, nats_errors.FlushTimeoutError, js_errors.ServiceUnavailableError,
    js_errors.NoStreamResponseError, OSError,
)


def classify(exc: BaseException, watch: PermissionWatch, subject: str | None, since: int) -> Failure | None:
    """What a failed operation on ``subject`` (started at ``since = watch.mark()``) means; None when ``exc`` is
    not a failure of the cluster (a bug: let it propagate)."""
    if watch.denied(subject, since) is not None:
        return Failure.DENIED
    if isinstance(exc, nats_errors.Error) and parse_violation(str(exc)):
        return Failure.DENIED
    if isinstance(exc, js_errors.ServiceUnavailableError):
        return Failure.UNREACHABLE  # 503: no JetStream leader (an election) or no responders
    if isinstance(exc, js_errors.APIError):
        return Failure.REJECTED
    if isinstance(exc, _UNREACHABLE):
        return Failure.UNREACHABLE
    return None


async def guarded(op: Awaitable[T], watch: PermissionWatch, subject: str | None) -> T:
    """Await ``op`` (a put, delete, request … on ``subject``); its failure becomes :class:`Denied`,
    :class:`Rejected` or :class:`Unreachable`. A permission violation for ``subject`` ends the wait at once
    (``Denied``) instead of after the request's timeout. ``subject=None``: any violation meanwhile counts (use it
    only when nothing else runs on the connection)."""
    since = watch.mark()
    task: asyncio.Future[T] = asyncio.ensure_future(op)
    denial = watch.waiter(subject)
    both: set[asyncio.Future[Any]] = {task, denial}
    try:
        await asyncio.wait(both, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.forget(denial)
        if not task.done():
            task.cancel()
            await asyncio.wait({task})
    where = subject or "(operation)"
    if not task.cancelled() and task.exception() is None:
        return task.result()
    v = watch.denied(subject, since)
    if v is not None:
        raise Denied(where, f"permissions violation for {v.kind} to {subject or v.subject}")
    exc = task.exception() if not task.cancelled() else asyncio.CancelledError()
    assert exc is not None
    failure = classify(exc, watch, subject, since)
    if failure is None:
        raise exc
    detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if failure is Failure.DENIED:
        raise Denied(where, detail) from exc
    if failure is Failure.REJECTED:
        raise Rejected(where, detail) from exc
    raise Unreachable(where, detail) from exc
