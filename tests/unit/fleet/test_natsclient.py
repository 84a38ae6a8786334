"""The client's direct subscription: nats-py's message processing for one subscription replaced by a plain call
(the installed nats-py must allow it; a version that does not fails here, the watch then falls back)."""

from __future__ import annotations

import asyncio

from portsentinel.fleet import natsclient as N


def test_the_installed_nats_py_allows_direct_messages() -> None:
    assert N.DIRECT


def test_messages_of_a_direct_subscription_go_to_the_handler_as_text_and_parsed_headers() -> None:
    got: list[tuple[str, str, bytes, dict[str, str] | None]] = []

    async def run() -> None:
        nc = N.DirectClient()
        nc._direct[7] = lambda *msg: got.append(msg)
        await nc._process_msg(7, b"$KV.b.a.j.1-2-3-4", b"$JS.ACK.x", b"value", b"")
        await nc._process_msg(7, b"$KV.b.a.j.1-2-3-5", b"$JS.ACK.y", b"", b"NATS/1.0\r\nKV-Operation: DEL\r\n\r\n")
        heartbeat = b"NATS/1.0 100 Idle Heartbeat\r\nNats-Last-Consumer: 3\r\n\r\n"
        await nc._process_msg(7, b"_INBOX_a.z", b"", b"", heartbeat)
        await nc._process_msg(8, b"other", b"", b"not ours", b"")  # no such subscription: nats-py's own way
        assert nc.stats["in_msgs"] == 4

    asyncio.run(run())
    assert got[0] == ("$KV.b.a.j.1-2-3-4", "$JS.ACK.x", b"value", None)
    assert got[1][3] == {"KV-Operation": "DEL"}
    assert got[2][3] is not None and got[2][3]["Status"] == "100" and got[2][3]["Nats-Last-Consumer"] == "3"
    assert len(got) == 3
