"""Denied vs unreachable: nats-py's asynchronous error callback read next to a failed operation."""

from __future__ import annotations

import asyncio

import pytest
from nats import errors as nats_errors
from nats.js import errors as js_errors

from portsentinel.fleet.nats_errors import (
    Denied,
    Failure,
    PermissionWatch,
    Rejected,
    Unreachable,
    classify,
    guarded,
    parse_violation,
)

# as nats-py hands them to the error callback: the server's line, lower-cased, without its quotes
PUB = 'nats: permissions violation for publish to "$kv.portsentinel_bans.b.j.203-0-113-7"'
SUB = 'nats: permissions violation for subscription to "_inbox_b.>"'


def test_parse_violation() -> None:
    assert parse_violation(PUB) == ("publish", "$kv.portsentinel_bans.b.j.203-0-113-7")
    assert parse_violation(SUB) == ("subscription", "_inbox_b.>")
    assert parse_violation("nats: 'Permissions Violation for Publish to \"$KV.x.Y\"'") == ("publish", "$KV.x.Y")
    assert parse_violation("nats: 'Authorization Violation'") is None
    assert parse_violation("nats: stale connection") is None


def test_watch_keeps_violations_and_passes_other_errors_on() -> None:
    others: list[Exception] = []

    async def chain(exc: Exception) -> None:
        others.append(exc)

    watch = PermissionWatch(chain, keep=2)

    async def feed() -> None:
        await watch.error_cb(nats_errors.Error(PUB))
        await watch.error_cb(nats_errors.Error("nats: slow consumer, messages dropped"))
        await watch.error_cb(nats_errors.Error(SUB))

    mark = watch.mark()
    asyncio.run(feed())
    assert len(others) == 1 and "slow consumer" in str(others[0])
    assert watch.denied("_INBOX_b.>", mark, "subscription") is not None
    assert watch.denied("_INBOX_b.>", mark, "publish") is None
    assert watch.denied("$KV.portsentinel_bans.b.j.203-0-113-7", mark) is not None
    assert watch.denied("$KV.other", mark) is None
    assert watch.denied(None, watch.mark()) is None  # only violations after the mark


def test_classify_a_timeout_by_what_the_callback_said() -> None:
    watch = PermissionWatch()
    mark = watch.mark()
    timeout = nats_errors.TimeoutError()
    assert classify(timeout, watch, "$KV.b.b.k", mark) is Failure.UNREACHABLE
    asyncio.run(watch.error_cb(nats_errors.Error(PUB)))
    assert classify(timeout, watch, "$KV.portsentinel_bans.b.j.203-0-113-7", mark) is Failure.DENIED
    assert classify(timeout, watch, "$KV.portsentinel_bans.a.j.203-0-113-7", mark) is Failure.UNREACHABLE
    assert classify(timeout, watch, None, mark) is Failure.DENIED
    api = js_errors.APIError(code=400, err_code=10115, description="rollup not permitted")
    assert classify(api, watch, "x", watch.mark()) is Failure.REJECTED
    assert classify(js_errors.ServiceUnavailableError(code=503), watch, "x", watch.mark()) is Failure.UNREACHABLE
    assert classify(nats_errors.NoServersError(), watch, "x", watch.mark()) is Failure.UNREACHABLE
    assert classify(ConnectionRefusedError(), watch, "x", watch.mark()) is Failure.UNREACHABLE
    assert classify(KeyError("bug"), watch, "x", watch.mark()) is None


def test_guarded_raises_the_kind_of_failure() -> None:
    watch = PermissionWatch()

    async def denied_put() -> None:
        await watch.error_cb(nats_errors.Error(PUB))  # the server's -ERR arrives before the request's timeout
        raise nats_errors.TimeoutError()

    async def outage() -> None:
        raise nats_errors.TimeoutError()

    async def refused() -> None:
        raise js_errors.BadRequestError(code=400, err_code=10115, description="rollup not permitted")

    async def ok() -> int:
        return 7

    async def bug() -> None:
        raise KeyError("bug")

    subject = "$KV.portsentinel_bans.b.j.203-0-113-7"
    with pytest.raises(Denied, match="permissions violation for publish to") as denied:
        asyncio.run(guarded(denied_put(), watch, subject))
    assert denied.value.failure is Failure.DENIED and denied.value.subject == subject
    with pytest.raises(Unreachable):
        asyncio.run(guarded(outage(), watch, subject))
    with pytest.raises(Rejected, match="rollup not permitted"):
        asyncio.run(guarded(refused(), watch, "$KV.portsentinel_bans.a.x"))
    assert asyncio.run(guarded(ok(), watch, "x")) == 7
    with pytest.raises(KeyError):
        asyncio.run(guarded(bug(), watch, "x"))


def test_guarded_does_not_wait_for_the_timeout_of_a_denied_request() -> None:
    watch = PermissionWatch()
    subject = "$KV.portsentinel_bans.b.j.203-0-113-7"
    cancelled: list[bool] = []

    async def slow_request() -> None:
        try:
            await asyncio.sleep(30)  # a request the server dropped: only its timeout would end it
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        loop.call_later(0.01, lambda: asyncio.ensure_future(watch.error_cb(nats_errors.Error(PUB))))
        other = loop.time()
        with pytest.raises(Denied):
            await guarded(slow_request(), watch, subject)
        assert loop.time() - other < 5
        # a violation for another subject does not end this wait
        loop.call_later(0.01, lambda: asyncio.ensure_future(watch.error_cb(nats_errors.Error(SUB))))
        with pytest.raises(Unreachable):
            await guarded(asyncio.wait_for(asyncio.sleep(1), 0.2), watch, subject)

    asyncio.run(scenario())
    assert cancelled == [True]


def test_link_reports_a_denied_put_as_refused_not_as_an_outage() -> None:
    """The daemon's Link: nats-py hands the violation lower-cased ($kv...), the put's subject is $KV...: still a
    refusal (never spooled and retried forever), while a plain timeout stays an outage."""
    from nats.js import api

    from portsentinel.fleet.config import FleetConfig
    from portsentinel.fleet.link import Link, LinkDown, Refused

    class Js:
        def __init__(self, link: Link, deny: bool) -> None:
            self.link, self.deny = link, deny

        async def publish(self, subject: str, payload: bytes, **_: object) -> api.PubAck:
            if self.deny:
                violation = f'nats: permissions violation for publish to "{subject.lower()}"'
                await self.link.perms.error_cb(Exception(violation))
            raise nats_errors.TimeoutError

    class Nc:
        is_connected, is_closed = True, False

    async def attempt(deny: bool) -> Exception:
        link = Link(FleetConfig(host="a", bucket="portsentinel_bans"), lambda kind, text: None)
        link.nc, link.js = Nc(), Js(link, deny)  # type: ignore[assignment]
        try:
            await link.put("b.portsentinel.1-2-3-4", b"{}")
        except (Refused, LinkDown) as exc:
            return exc
        raise AssertionError("the put did not fail")

    assert isinstance(asyncio.run(attempt(True)), Refused)
    assert isinstance(asyncio.run(attempt(False)), LinkDown)
