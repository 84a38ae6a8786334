"""Reading the private journald back (scripts/with-journald.sh): the entries a test tagged with its own value."""

from __future__ import annotations

import json
import subprocess
import time
import uuid


def new_tag() -> str:
    """A value for the tests' own field PS_TEST, so tests sharing the session's journal never see each other's."""
    return uuid.uuid4().hex


def entries(tag: str, want: int, timeout: float = 10.0) -> list[dict[str, str]]:
    """The journal's entries with PS_TEST=``tag`` (all fields, trusted ones included), once ``want`` are stored
    (journald stores asynchronously to the send) or when ``timeout`` has passed."""
    deadline = time.monotonic() + timeout
    while True:
        out = subprocess.run(["journalctl", "--no-pager", "--all", "-o", "json", f"PS_TEST={tag}"],
                             capture_output=True, text=True, timeout=30, check=True).stdout
        got = [json.loads(line) for line in out.splitlines() if line.strip()]
        if len(got) >= want or time.monotonic() >= deadline:
            return got
        time.sleep(0.05)
