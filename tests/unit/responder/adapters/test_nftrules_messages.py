"""responder.adapters.nftrules.messages / error_of: the netlink messages of one buffer the kernel sent, as the
health check's chain reading and bench/set_watch.py take them."""

from __future__ import annotations

import errno
import struct

from portsentinel.responder.adapters.nftrules import NLMSG_DONE, NLMSG_ERROR, error_of, messages

HEAD = struct.Struct("=IHHII")


def msg(mtype: int, payload: bytes) -> bytes:
    raw = HEAD.pack(HEAD.size + len(payload), mtype, 0, 1, 0) + payload
    return raw + b"\0" * (-len(raw) % 4)


def test_each_message_of_a_buffer_with_its_padding() -> None:
    data = msg(0x0A0C, b"abcde") + msg(NLMSG_ERROR, struct.pack("=i", -errno.ENOENT)) + msg(NLMSG_DONE, b"")
    got = list(messages(data))
    assert [t for t, _ in got] == [0x0A0C, NLMSG_ERROR, NLMSG_DONE]
    assert got[0][1] == b"abcde"
    assert error_of(got[1][1]) == errno.ENOENT
    assert error_of(struct.pack("=i", 0)) == 0


def test_a_cut_or_broken_message_ends_the_buffer() -> None:
    whole = msg(0x0A0C, b"abcd")
    assert list(messages(whole + whole[:10])) == [(0x0A0C, b"abcd")]  # a header cut short: not a message
    broken = HEAD.pack(4, 0x0A0C, 0, 1, 0)  # a length below the header's own
    assert list(messages(whole + broken + whole)) == [(0x0A0C, b"abcd")]
