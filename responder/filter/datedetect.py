"""fail2ban's date detection: find the date in a log line, parse it, and say where it is.

A filter's ``datepattern`` (its language: :mod:`.date_templates`) gives the templates; :class:`DateDetector`
tries them in fail2ban's order and remembers which matched, so a log's own format wins. The date's text (the
template's first group) is cut from the line before the failregexes run; its fields become epoch seconds by
fail2ban's rules (:mod:`.date_fields`).

Pure: the clock is passed in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from portsentinel.responder.filter.date_templates import Template, default_templates, templates_for


@dataclass
class DateDetector:
    """Templates tried in fail2ban's order; remembers hits like fail2ban so a log's own format wins."""

    templates: list[Template] = field(default_factory=list)
    _last_distance: int = 1
    _last: Template | None = None
    # The last date text parsed, per template and second of ``now``: most lines of a busy log share it.
    _memo: tuple[Template | None, str, int, float | None] = (None, "", 0, None)

    @classmethod
    def parse(cls, text: str) -> DateDetector | None:
        """A ``datepattern`` value → a detector; None for ``{NONE}``. ValueError names a bad pattern."""
        out: list[Template] = []
        seen: set[str] = set()
        for raw in (t.strip() for t in text.split("\n")):
            if not raw:
                continue
            templates = templates_for(raw)
            if templates is None:
                return None
            for t in templates:
                if t.regex.pattern not in seen:
                    seen.add(t.regex.pattern)
                    out.append(t)
        return cls(out or default_templates())

    @property
    def last(self) -> Template | None:
        """The template that matched the last line (tried first on the next one)."""
        return self._last

    def find(self, line: str, now: float) -> tuple[int, int, float | None] | None:
        """(start, end) of the date text in ``line`` and its epoch time (None when it does not parse)."""
        tpl = self._last
        m = None
        if tpl is not None:  # the template that matched last time, first (as fail2ban does)
            m = tpl.lean.search(line)
            if m is not None:
                pos = m.start()
                if not (tpl.anchored or pos == self._last_distance or len(self.templates) == 1):
                    m = None
        if m is None:
            chosen = self._search(line)
            if chosen is None:
                return None
            m, tpl = chosen
            self._last = tpl
            pos = m.start()
        assert tpl is not None
        tpl.hits += 1
        tpl.distance = self._last_distance = pos
        start, end = m.span(1)
        if start >= end:
            return None if start < 0 else (start, end, None)
        text = line[start:end]
        memo = self._memo
        if memo[1] == text and memo[0] is tpl and memo[2] == int(now):
            return start, end, memo[3]
        if m.re is not tpl.regex:  # the lean regex found it: the full one tells the fields (same match)
            full = tpl.regex.search(line)
            assert full is not None and full.span(1) == (start, end)
            m = full
        try:
            stamp: float | None = tpl.epoch(m, now)
        except (ValueError, KeyError, OverflowError):
            stamp = None
        self._memo = (tpl, text, int(now), stamp)
        return start, end, stamp

    def _search(self, line: str) -> tuple[re.Match[str], Template] | None:
        """fail2ban's search: the first template matching at the usual distance, else the nearest match."""
        best: tuple[re.Match[str], Template] | None = None
        templates = self.templates
        for i, tpl in enumerate(templates):
            m = tpl.regex.search(line)
            if m is None:
                continue
            distance = m.start()
            if i + 1 >= len(templates) or tpl.anchored or (distance == 0 and tpl.hits and not templates[i + 1].hits):
                return m, tpl
            if distance > tpl.distance or distance > self._last_distance:
                if best is None or distance < best[0].start():
                    best = (m, tpl)
                continue
            return m, tpl
        return best
