"""Mail an alert and what was done about it, over smtplib to a configured server.

Every value can carry attacker-influenced text (matched log lines, a PTR name in a record): header values
are reduced to one line of printable characters (no CR/LF, so no header injection) and length-capped, and
the body is plain text with control characters replaced; the message is built with ``email.message`` and
its strict SMTP policy, which also refuses a header containing a line break.
"""

from __future__ import annotations

import re
import smtplib
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formatdate, make_msgid

_HEADER_BAD = re.compile(r"[\x00-\x1f\x7f]+")
_BODY_BAD = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_ADDR_RE = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\Z|[A-Za-z0-9._%+-]+\Z")
MAX_HEADER = 200
MAX_BODY = 16384


def header_text(value: str) -> str:
    """One printable line: control characters (CR, LF, …) become a space, then the length is capped."""
    return " ".join(_HEADER_BAD.sub(" ", value).split())[:MAX_HEADER]


def body_text(value: str) -> str:
    """Text with newlines kept and other control characters replaced by ``?``."""
    return _BODY_BAD.sub("?", value.replace("\r\n", "\n").replace("\r", "\n"))


def _address(value: str) -> str:
    value = value.strip()
    if not _ADDR_RE.match(value):
        raise ValueError(f"bad mail address {value[:60]!r}")
    return value


@dataclass(frozen=True)
class Mail:
    """What to send: the server, the envelope, a subject and ``facts`` shown as ``key: value`` lines."""

    sender: str
    to: tuple[str, ...]
    subject: str
    facts: Mapping[str, str] = field(default_factory=dict)
    body: str = ""
    host: str = "localhost"
    port: int = 25
    timeout: float = 10.0


def build(mail: Mail) -> EmailMessage:
    """The message, with every attacker-reachable value sanitised for its place."""
    msg = EmailMessage(policy=SMTP)
    msg["From"] = _address(mail.sender)
    msg["To"] = ", ".join(_address(t) for t in mail.to)
    msg["Subject"] = header_text(mail.subject)
    msg["Date"] = formatdate(localtime=True)
    msg["Message-ID"] = make_msgid(domain="portsentinel.invalid")
    lines = [f"{header_text(k)}: {header_text(v)}" for k, v in mail.facts.items() if k != "matches"]
    text = "\n".join(lines)
    if mail.body:
        text += "\n\n" + mail.body
    if "matches" in mail.facts and mail.facts["matches"]:
        text += "\n\nMatches:\n" + mail.facts["matches"]
    msg.set_content(body_text(text)[:MAX_BODY] + "\n", charset="utf-8", cte="quoted-printable")
    return msg


def send(mail: Mail) -> None:
    """Send ``mail``; raises OSError / smtplib.SMTPException on failure."""
    if not mail.to:
        raise ValueError("no recipient")
    msg = build(mail)
    with smtplib.SMTP(mail.host, mail.port, timeout=mail.timeout) as smtp:
        smtp.send_message(msg, from_addr=_address(mail.sender), to_addrs=[_address(t) for t in mail.to])
