"""The watch's own consumer: acknowledgement subjects, the create request, and PushWatch's handling of what the
server delivers (gaps, flow control, heartbeats) without a server: messages are handed to its drain directly."""

from __future__ import annotations

import asyncio
import json

import pytest

from portsentinel.fleet import consumer as K
from portsentinel.fleet.consumer import Entry
from portsentinel.fleet.pushwatch import PushWatch, Raw

STREAM = "KV_portsentinel_bans"
PREFIX = "$KV.portsentinel_bans."


def test_both_forms_of_the_acknowledgement_subject() -> None:
    old = f"$JS.ACK.{STREAM}.ps_watch_a.1.4711.12.1764490000123456789.99"
    new = f"$JS.ACK.hub.ACCHASH.{STREAM}.ps_watch_a.1.4711.12.1764490000123456789.99.rNdToK"
    for reply in (old, new, new.rsplit(".", 1)[0]):
        assert K.parse_ack(reply) == K.Ack(4711, 12, 1764490000123456789, 99)
    for bad in ("", "_INBOX_a.x", f"$JS.ACK.{STREAM}.c.1.2", f"$JS.ACK.{STREAM}.c.1.x.2.3.4", "$JS.FC.x.y"):
        assert K.parse_ack(bad) is None


def test_the_consumer_is_named_after_the_host_and_configured_as_an_ordered_one() -> None:
    assert K.consumer_name("web-1") == "ps_watch_web-1"
    with pytest.raises(ValueError):
        K.consumer_name("a.>")
    assert K.create_subject(STREAM, "ps_watch_a") == f"$JS.API.CONSUMER.CREATE.{STREAM}.ps_watch_a"
    body = json.loads(K.create_request(STREAM, "ps_watch_a", deliver="_INBOX_a.x", filter_subject=PREFIX + ">",
                                       after_seq=0, heartbeat=5, inactive=60))
    cfg = body["config"]
    assert body["stream_name"] == STREAM and cfg["name"] == "ps_watch_a" and "durable_name" not in cfg
    assert cfg["deliver_policy"] == "last_per_subject" and "opt_start_seq" not in cfg
    assert (cfg["ack_policy"], cfg["flow_control"], cfg["idle_heartbeat"]) == ("none", True, 5_000_000_000)
    resumed = json.loads(K.create_request(STREAM, "ps_watch_a", deliver="_INBOX_a.x", filter_subject=PREFIX + ">",
                                          after_seq=41, heartbeat=5, inactive=60))["config"]
    assert resumed["deliver_policy"] == "by_start_sequence" and resumed["opt_start_seq"] == 42


def test_api_answers_and_errors() -> None:
    assert K.api_answer(b'{"name":"x","num_pending":3}')["num_pending"] == 3
    with pytest.raises(K.ApiError) as err:
        K.api_answer(b'{"error":{"code":404,"err_code":10014,"description":"consumer not found"}}')
    assert err.value.code == 10014 and "consumer not found" in str(err.value)
    with pytest.raises(K.ApiError):
        K.api_answer(b"<html>")


def test_operations_from_headers() -> None:
    assert K.operation(None) == "PUT" and K.operation({}) == "PUT"
    assert K.operation({"KV-Operation": "DEL"}) == "DEL"
    assert K.operation({"Nats-Marker-Reason": "MaxAge"}) == "PURGE"
    assert K.operation({"Nats-Marker-Reason": "Remove"}) == "DEL"


class FakeNc:
    def __init__(self) -> None:
        self.published: list[str] = []

    async def publish(self, subject: str, payload: bytes = b"") -> None:
        self.published.append(subject)


def data(sseq: int, dseq: int, key: str, pending: int = 0, headers: dict[str, str] | None = None) -> Raw:
    reply = f"$JS.ACK.{STREAM}.ps_watch_j.1.{sseq}.{dseq}.1764490000500000000.{pending}"
    return (PREFIX + key, reply, b"v" if headers is None else b"", headers)


def control(reply: str = "", **headers: str) -> Raw:
    return ("_INBOX_j.x", reply, b"", headers)


def watch() -> tuple[PushWatch, FakeNc, list[list[Entry]], list[str]]:
    nc = FakeNc()
    got: list[list[Entry]] = []
    pw = PushWatch(nc, None, stream=STREAM, prefix=PREFIX, name="ps_watch_j",  # type: ignore[arg-type]
                   heartbeat=5, on_entries=got.append)
    resets: list[str] = []
    pw._reset = resets.append  # type: ignore[method-assign, assignment]
    return pw, nc, got, resets


def drain(pw: PushWatch, msgs: list[Raw]) -> None:
    async def run() -> None:
        pw._drain(pw._gen, list(msgs))
        await asyncio.sleep(0)  # the flow-control replies go out

    asyncio.run(run())


def test_entries_are_handed_over_in_one_list_with_their_fields() -> None:
    pw, _, got, resets = watch()
    drain(pw, [data(10, 1, "b.portsentinel.203-0-113-1", 2), data(11, 2, "b.portsentinel.203-0-113-2", 1),
               data(12, 3, "b.portsentinel.203-0-113-1", 0, {"KV-Operation": "DEL"})])
    assert resets == [] and len(got) == 1
    assert got[0] == [Entry("b.portsentinel.203-0-113-1", "PUT", b"v", 10, 2, 1764490000.5),
                      Entry("b.portsentinel.203-0-113-2", "PUT", b"v", 11, 1, 1764490000.5),
                      Entry("b.portsentinel.203-0-113-1", "DEL", b"", 12, 0, 1764490000.5)]
    assert (pw.sseq, pw.pending, pw._dseq) == (12, 0, 3)


def test_a_gap_in_the_consumer_sequence_hands_over_what_came_before_and_recreates() -> None:
    pw, _, got, resets = watch()
    drain(pw, [data(10, 1, "b.j.203-0-113-1"), data(11, 2, "b.j.203-0-113-2"), data(13, 4, "b.j.203-0-113-4"),
               data(14, 5, "b.j.203-0-113-5")])
    assert [e.seq for e in got[0]] == [10, 11] and len(got) == 1
    assert resets == ["consumer sequence 4 after 2"] and pw.sseq == 11


def test_flow_control_is_answered_after_the_data_before_it() -> None:
    pw, nc, got, resets = watch()
    fc = f"$JS.FC.{STREAM}.ps_watch_j.xyz"
    drain(pw, [data(1, 1, "b.j.203-0-113-1"), control(fc, Status="100", Description="FlowControl Request"),
               data(2, 2, "b.j.203-0-113-2")])
    assert [[e.seq for e in part] for part in got] == [[1], [2]]
    assert nc.published == [fc] and resets == []


def test_heartbeats_catch_a_lost_tail_and_answer_a_stall() -> None:
    pw, nc, got, resets = watch()
    drain(pw, [data(1, 1, "b.j.203-0-113-1"), control(**{"Status": "100", "Description": "Idle Heartbeat",
                                                          "Nats-Last-Consumer": "1", "Nats-Consumer-Stalled":
                                                          "$JS.FC.x.y"})])
    assert resets == [] and nc.published == ["$JS.FC.x.y"]
    drain(pw, [control(**{"Status": "100", "Description": "Idle Heartbeat", "Nats-Last-Consumer": "3"})])
    assert resets == ["heartbeat names consumer sequence 3, last received 1"]


def test_an_old_generations_messages_are_dropped() -> None:
    pw, _, got, _ = watch()
    async def run() -> None:
        pw._drain(pw._gen - 1, [data(1, 1, "b.j.203-0-113-1")])
    asyncio.run(run())
    assert got == []
