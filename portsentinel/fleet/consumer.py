"""The watch's JetStream consumer, the pure half: its name, its configuration, and what a delivered message's
reply subject and headers say (docs/fleet.md, "The watch"). No I/O; :mod:`.pushwatch` does the talking.

- **One consumer per host, by name** (``ps_watch_<host>``): the setup tool's permission block lets a host create,
  delete and ask about only that name (``$JS.API.CONSUMER.CREATE.<stream>.ps_watch_<host>``, nats-server 2.9+),
  so a compromised host holds at most one consumer on the bucket's stream.
- The consumer is an ordered push consumer done by hand: no acknowledgements, flow control, an idle heartbeat,
  kept in memory with one replica, dropped by the server after ``inactive`` seconds without a subscriber.
- A data message's reply subject is JetStream's acknowledgement subject, which carries the stream sequence, the
  consumer sequence (a gap there: a message was lost on the way, recreate the consumer after the last stream
  sequence), the time the message was stored and how many are still pending. Two forms:
  ``$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<dseq>.<nanos>.<pending>`` (9 tokens) and, from 2.10,
  ``$JS.ACK.<domain>.<account>.<stream>.<consumer>.<delivered>.<sseq>.<dseq>.<nanos>.<pending>.<token>``
  (11 or more; the fields by position from ``<domain>``).
"""

from __future__ import annotations

import json
from typing import NamedTuple

from .keys import valid_name

ACK_PREFIX = "$JS.ACK."
FC_PREFIX = "$JS.FC."
#: Headers of the server's control messages (nats-py puts the status line's code and text under these names).
STATUS, DESCRIPTION = "Status", "Description"
LAST_CONSUMER = "Nats-Last-Consumer"
STALLED = "Nats-Consumer-Stalled"
KV_OP = "KV-Operation"
MARKER_REASON = "Nats-Marker-Reason"


class Entry(NamedTuple):
    """One message of the watch: key, operation (PUT, DEL, PURGE), value, stream sequence, pending, stored at."""

    key: str
    op: str
    value: bytes
    seq: int
    pending: int
    stamp: float


def consumer_name(host: str) -> str:
    """The only consumer name host ``host`` may use on the bucket's stream."""
    if not valid_name(host):
        raise ValueError(f"bad host name {host[:70]!r}")
    return f"ps_watch_{host}"


def create_subject(stream: str, name: str) -> str:
    return f"$JS.API.CONSUMER.CREATE.{stream}.{name}"


def delete_subject(stream: str, name: str) -> str:
    return f"$JS.API.CONSUMER.DELETE.{stream}.{name}"


def info_subject(stream: str, name: str) -> str:
    return f"$JS.API.CONSUMER.INFO.{stream}.{name}"


def create_request(stream: str, name: str, *, deliver: str, filter_subject: str, after_seq: int,
                   heartbeat: float, inactive: float) -> bytes:
    """The body of a consumer create: every message after stream sequence ``after_seq``, or (0) the last message
    of every subject, delivered to ``deliver`` with flow control and an idle heartbeat of ``heartbeat`` seconds."""
    config: dict[str, object] = {
        "name": name, "deliver_subject": deliver, "filter_subject": filter_subject, "ack_policy": "none",
        "max_deliver": 1, "replay_policy": "instant", "flow_control": True, "idle_heartbeat": int(heartbeat * 1e9),
        "inactive_threshold": int(inactive * 1e9), "mem_storage": True, "num_replicas": 1,
    }
    if after_seq > 0:
        config.update(deliver_policy="by_start_sequence", opt_start_seq=after_seq + 1)
    else:
        config["deliver_policy"] = "last_per_subject"
    return json.dumps({"stream_name": stream, "config": config}, separators=(",", ":")).encode()


class ApiError(Exception):
    """JetStream's API answered with an error (``code``: its error code, e.g. 10014 consumer not found)."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(f"{text} (error {code})")
        self.code = code


def api_answer(data: bytes) -> dict[str, object]:
    """A JetStream API answer as a dict; :class:`ApiError` when it reports an error or is not JSON."""
    try:
        answer = json.loads(data or b"{}")
    except ValueError:
        raise ApiError(0, f"not a JSON answer: {data[:80]!r}") from None
    if not isinstance(answer, dict):
        raise ApiError(0, f"not a JSON object: {data[:80]!r}")
    error = answer.get("error")
    if isinstance(error, dict):
        code = error.get("err_code") or error.get("code") or 0
        raise ApiError(int(code) if isinstance(code, int) else 0, str(error.get("description", error))[:200])
    return answer


class Ack(NamedTuple):
    """What a data message's acknowledgement subject says."""

    sseq: int
    dseq: int
    nanos: int
    pending: int


def parse_ack(reply: str) -> Ack | None:
    """The fields of ``reply`` (either form), or None when it is not an acknowledgement subject."""
    if not reply.startswith(ACK_PREFIX):
        return None
    t = reply.split(".")
    n = len(t)
    try:
        if n == 9:
            return Ack(int(t[5]), int(t[6]), int(t[7]), int(t[8]))
        if n >= 11:
            return Ack(int(t[7]), int(t[8]), int(t[9]), int(t[10]))
    except ValueError:
        return None
    return None


def operation(headers: dict[str, str] | None) -> str:
    """PUT, DEL or PURGE of a data message (``KV-Operation``; 2.11+ server markers by ``Nats-Marker-Reason``)."""
    if not headers:
        return "PUT"
    reason = headers.get(MARKER_REASON)
    if reason:  # 2.11+: a key aged out or was purged by the server
        return "PURGE" if reason in ("MaxAge", "Purge") else "DEL"
    return headers.get(KV_OP, "PUT")


def last_consumer_seq(headers: dict[str, str]) -> int | None:
    """A heartbeat's ``Nats-Last-Consumer``: the last consumer sequence the server delivered."""
    text = headers.get(LAST_CONSUMER)
    try:
        return int(text) if text else None
    except ValueError:
        return None
