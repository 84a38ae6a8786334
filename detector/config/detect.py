"""Which format a configuration text is in (the project's own, or a classic portsentry.conf), and its parse.
No I/O: ``files.py`` reads the file.
"""

from __future__ import annotations

import re

from portsentinel.detector.config.own_grammar import parse_own
from portsentinel.detector.config.portsentry_conf import parse_portsentry
from portsentinel.detector.config.values import FORMAT_OWN, FORMAT_PORTSENTRY, Parsed

_PORTSENTRY_LINE = re.compile(r"[A-Z][A-Z0-9_]*\s*=")


def detect_format(text: str) -> str:
    """FORMAT_PORTSENTRY when the first setting is a classic ``KEY="value"`` line (no ``[section]`` before
    it), else FORMAT_OWN (also for an empty file)."""
    for raw in text.split("\n"):
        stripped = raw.strip()
        if not stripped or stripped[0] in "#;":
            continue
        return FORMAT_PORTSENTRY if _PORTSENTRY_LINE.match(stripped) else FORMAT_OWN
    return FORMAT_OWN


def parse_any(text: str, path: str) -> Parsed:
    """Detect the format and parse. ``path`` only names the text in errors and warnings."""
    if detect_format(text) == FORMAT_PORTSENTRY:
        return parse_portsentry(text, path)
    return parse_own(text, path)
