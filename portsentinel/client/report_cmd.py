"""``portsentinel report``: the command (records loaded, summarised, printed; the HTML written when asked).

The figures: :mod:`.report`; the HTML: :mod:`.report_html`. Docs: docs/metrics.md.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from portsentinel.common.values import duration

from .report import TOP, load, render_text, summarize
from .report_html import render_html


def run(since_text: str, html: str | None, files: list[str] | None, buckets: int = 24,
        now: float | None = None, top: int = TOP) -> int:
    """The command: the terminal report on stdout, and the HTML file when asked. Exit status 2 on bad input."""
    try:
        span = duration(since_text)
    except ValueError as exc:
        print(f"portsentinel report: --since: {exc}", file=sys.stderr)
        return 2
    until = time.time() if now is None else now
    since = until - span
    try:
        records = load(since, until, files)
    except (OSError, subprocess.TimeoutExpired) as exc:
        print(f"portsentinel report: {exc}", file=sys.stderr)
        return 2
    summary = summarize(records, since, until, buckets)
    sys.stdout.write(render_text(summary, top))
    if html:
        try:
            Path(html).write_text(render_html(summary), encoding="utf-8")
        except OSError as exc:
            print(f"portsentinel report: {html}: {exc.strerror or exc}", file=sys.stderr)
            return 2
        print(f"  HTML report: {html}")
    return 0
