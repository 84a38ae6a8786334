"""Forged records counted per writer and reported in aggregate, so a flood of them costs no journal budget. Pure.

A *writer* is what journald's trusted fields say about who wrote an entry (``_UID``, ``_SYSTEMD_UNIT``,
``_COMM``), or, for a file source, the jail and its reason (an untrusted file has one writer: its owner). The
first forgery of a writer is reported at once (with the address it named); later ones inside the same
interval are only counted, and one record per writer reports the count when the interval ends. The table of
writers is bounded: past ``max_writers`` every new writer is counted under one ``(other writers)`` entry.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

OTHER = "(other writers)"


def writer_of(fields: Mapping[str, str], fallback: str) -> str:
    """A short, bounded description of an entry's writer from journald's trusted fields (``fallback`` when none)."""
    parts = [f"{name}={fields[name][:64]}" for name in ("_UID", "_SYSTEMD_UNIT", "_COMM") if fields.get(name)]
    return " ".join(parts) if parts else fallback[:200]


@dataclass
class Report:
    """One aggregate record: ``count`` forged matches from ``writer`` between ``since`` and ``until``."""

    writer: str
    count: int
    since: float
    until: float
    jail: str
    ip: str
    reason: str
    first: bool = False  # the writer's first forgery of the interval, reported at once


@dataclass
class _Tally:
    since: float
    jail: str
    ip: str
    reason: str
    count: int = 0  # forged matches since the last report


@dataclass
class ForgeryTally:
    interval: float = 60.0
    max_writers: int = 256
    total: int = 0
    _writers: dict[str, _Tally] = field(default_factory=dict)

    def add(self, writer: str, jail: str, ip: str, reason: str, now: float) -> Report | None:
        """Count one forged match; a Report when it is the writer's first in this interval (report it now)."""
        self.total += 1
        if writer not in self._writers and len(self._writers) >= self.max_writers:
            writer = OTHER
        t = self._writers.get(writer)
        if t is None:
            self._writers[writer] = _Tally(now, jail, ip, reason)
            return Report(writer, 1, now, now, jail, ip, reason, first=True)
        t.count += 1
        return None

    def next_due(self) -> float | None:
        """When the oldest interval ends (None: nothing counted)."""
        return min((t.since + self.interval for t in self._writers.values()), default=None)

    def due(self, now: float) -> list[Report]:
        """Reports of the intervals that ended; a writer with nothing more counted is forgotten."""
        out: list[Report] = []
        for writer, t in list(self._writers.items()):
            if now - t.since < self.interval:
                continue
            if t.count:
                out.append(Report(writer, t.count, t.since, now, t.jail, t.ip, t.reason))
                self._writers[writer] = _Tally(now, t.jail, t.ip, t.reason)
            else:
                del self._writers[writer]
        return out

    def flush(self, now: float) -> list[Report]:
        """Every count not yet reported (at stop and reload)."""
        out = [Report(w, t.count, t.since, now, t.jail, t.ip, t.reason) for w, t in self._writers.items() if t.count]
        self._writers.clear()
        return out


def describe(r: Report, interval: float) -> tuple[str, dict[str, str]]:
    """The MESSAGE and PS_* fields of the record that reports ``r``."""
    if r.first:
        return (f"forged record ignored ({r.reason}) in jail {r.jail} for {r.ip}; more from {r.writer} are "
                f"counted and reported once every {interval:g} s",
                {"PS_JAIL": r.jail, "PS_SRC": r.ip, "PS_DETAIL": f"forged=1 writer={r.writer}"})
    return (f"{r.count} more forged record(s) ignored from {r.writer} in {r.until - r.since:.0f} s "
            f"(first: jail {r.jail}, {r.ip}: {r.reason})",
            {"PS_JAIL": r.jail, "PS_DETAIL": f"forged={r.count} writer={r.writer}"})
