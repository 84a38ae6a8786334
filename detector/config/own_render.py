"""A configuration as the own format's text: the inverse of ``own_grammar.parse_config_text`` (what
``portsentinel import-portsentry`` and the round-trip tests write). No I/O.
"""

from __future__ import annotations

from portsentinel.detector.config.model import DetectorConfig
from portsentinel.detector.config.own_grammar import KEYS
from portsentinel.detector.config.own_lexer import INLINE_COMMENT
from portsentinel.detector.config.values import SECTION

_PORT_LISTS = ("tcp_ports", "udp_ports", "advanced_exclude_tcp", "advanced_exclude_udp", "sctp_ports",
               "advanced_exclude_sctp", "proto_exclude")


def _port_list(ports: tuple[int, ...]) -> str:
    """Ports, ascending runs of three or more as ranges; order is kept, so it parses back equal."""
    items: list[str] = []
    i = 0
    while i < len(ports):
        j = i
        while j + 1 < len(ports) and ports[j + 1] == ports[j] + 1:
            j += 1
        if j - i >= 2:
            items.append(f"{ports[i]}-{ports[j]}")
        else:
            items.extend(str(p) for p in ports[i:j + 1])
        i = j + 1
    return ", ".join(items)


def _quote(text: str) -> str:
    if "\n" in text or "\r" in text:
        raise ValueError("a value spanning lines cannot be written")
    if text != text.strip() or text[:1] in ('"', "#", ";") or INLINE_COMMENT.search(text):
        return f'"{text}"'
    return text


def _seconds(value: float) -> str:
    return str(int(value)) if value == int(value) else repr(value)


def format_config(config: DetectorConfig) -> str:
    """The own format's text for ``config`` (every own key; block_* and responder keys have no key here)."""
    lines = [f"[{SECTION}]"]
    for key in KEYS:
        value = getattr(config, key)
        if key in _PORT_LISTS:
            text = _port_list(value)
        elif key == "modes":
            text = ", ".join(value)
        elif key == "ignore":
            text = ", ".join(str(net) for net in value)
        elif isinstance(value, bool):
            text = "yes" if value else "no"
        elif isinstance(value, float):
            text = _seconds(value)
        elif isinstance(value, int):
            text = str(value)
        else:
            text = _quote(value)
        lines.append(f"{key} = {text}".rstrip())
    return "\n".join(lines) + "\n"
