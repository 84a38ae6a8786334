"""nats-py's client with one addition: a subscription whose messages go straight to a plain function.

nats-py hands every message of a subscription through an ``asyncio.Queue`` to a task that awaits the callback
per message, after building a ``Msg`` for it: ~3 us a message on this kind of machine, a third of a joining host's
catch-up time in nats-py (docs/performance.md, "Session 5"). :meth:`DirectClient.subscribe_direct` subscribes as
nats-py does (so a reconnect subscribes again, as for any subscription) and gives each message of that
subscription, in order, to ``handler(subject, reply, data, headers)`` from the client's reading task: a plain
call, no ``Msg``, no queue, no task. The handler must only take the message (append it to a list); the watch
(:mod:`.pushwatch`) works on that list once the client has handed over what it read.

This overrides nats-py's ``Client._process_msg``, a private method whose arguments have been the same through
nats-py 2.x; :data:`DIRECT` is False (and ``subscribe_direct`` falls back to an ordinary callback that makes the
same call per message) when the installed nats-py does not have it in that form.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

#: subject, reply, data, headers (None, or nats-py's parsed headers: status lines as "Status"/"Description")
Handler = Callable[[str, str, bytes, "dict[str, str] | None"], None]


def _direct_possible() -> bool:
    method = getattr(Client, "_process_msg", None)
    if method is None or not inspect.iscoroutinefunction(method):
        return False
    if not inspect.iscoroutinefunction(getattr(Client, "_process_headers", None)):
        return False
    names = list(inspect.signature(method).parameters)
    return names == ["self", "sid", "subject", "reply", "data", "headers"]


#: The installed nats-py lets messages go straight to a handler.
DIRECT = _direct_possible()


async def subscribe_raw(nc: Client, subject: str, handler: Handler) -> Subscription:
    """``handler`` gets every message of ``subject``: directly on a :class:`DirectClient`, else through an
    ordinary callback (any nats-py client, e.g. the lab's tools)."""
    if isinstance(nc, DirectClient):
        return await nc.subscribe_direct(subject, handler)

    async def cb(msg: Msg) -> None:
        handler(msg.subject, msg.reply, msg.data, msg.headers)

    return await nc.subscribe(subject, cb=cb)


async def unsubscribe_raw(nc: Client, sub: Subscription) -> None:
    if isinstance(nc, DirectClient):
        nc.forget_direct(sub)
    await sub.unsubscribe()


class DirectClient(Client):
    def __init__(self) -> None:
        super().__init__()
        self._direct: dict[int, Handler] = {}

    async def subscribe_direct(self, subject: str, handler: Handler) -> Subscription:
        """Subscribe to ``subject``; each of its messages goes to ``handler`` (see the module's text)."""
        if not DIRECT:
            async def cb(msg: Msg) -> None:
                handler(msg.subject, msg.reply, msg.data, msg.headers)

            return await self.subscribe(subject, cb=cb)
        sub = await self.subscribe(subject)  # no callback: nats-py starts no task for it
        sid = getattr(sub, "_id", None)  # the subscription's id in nats-py (private too)
        if not isinstance(sid, int):
            await sub.unsubscribe()

            async def fallback(msg: Msg) -> None:
                handler(msg.subject, msg.reply, msg.data, msg.headers)

            return await self.subscribe(subject, cb=fallback)
        self._direct[sid] = handler
        return sub

    def forget_direct(self, sub: Subscription) -> None:
        """No more direct calls for ``sub`` (before unsubscribing it)."""
        self._direct.pop(getattr(sub, "_id", None), None)  # type: ignore[arg-type]

    async def _process_msg(self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: Any) -> None:
        handler = self._direct.get(sid)
        if handler is None:
            await super()._process_msg(sid, subject, reply, data, headers)
            return
        self.stats["in_msgs"] += 1
        self.stats["in_bytes"] += len(data)
        hdr = await self._process_headers(headers) if headers else None
        handler(subject.decode(), reply.decode(), data, hdr)
