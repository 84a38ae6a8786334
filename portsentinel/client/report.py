"""``portsentinel report``: what the detector saw and the responder did, from the journal or the JSON-lines files.

Pure parts (:func:`summarize`, :func:`render_text`) take records and times; :func:`load` is the adapter (it runs
``journalctl -o json`` or reads the files). The HTML form is in :mod:`.report_html`. Docs: docs/metrics.md.

Every figure comes from the records: a scan is a ``scan`` record (a source crossing the trigger, per protocol), a
ban is a ``ban`` record with a jail (restores and action retries are not bans), the probes and ports of a source
are the largest ``PS_HITS`` / ``PS_PORTS`` its scan and summary records carry (they count "so far"), per protocol.
"""

from __future__ import annotations

import json
import math
import subprocess
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from portsentinel import record as R

SPARKS = "▁▂▃▄▅▆▇█"
TOP = 10


@dataclass
class Source:
    """One scanning source over the report's range."""

    address: str
    scans: int = 0
    kinds: Counter[str] = field(default_factory=Counter)  # "tcp syn" → scan records
    ports: list[str] = field(default_factory=list)  # "tcp/143": the ports of its scan records, first seen first
    hits: dict[str, int] = field(default_factory=dict)  # protocol → largest PS_HITS
    distinct: dict[str, int] = field(default_factory=dict)  # protocol → largest PS_PORTS
    bans: int = 0

    @property
    def probes(self) -> int:
        return sum(self.hits.values())

    @property
    def nports(self) -> int:
        return sum(self.distinct.values())


@dataclass
class Summary:
    since: float
    until: float
    buckets: int
    scans_over_time: list[int]
    bans_over_time: list[int]
    scans: int = 0
    bans: int = 0
    unbans: int = 0
    failed: int = 0
    sources: dict[str, Source] = field(default_factory=dict)
    ports: Counter[str] = field(default_factory=Counter)  # "tcp/143" → scan records
    kinds: Counter[str] = field(default_factory=Counter)  # "tcp syn" → scan records
    bans_by_jail: Counter[str] = field(default_factory=Counter)
    bans_by_action: Counter[str] = field(default_factory=Counter)

    @property
    def bucket_seconds(self) -> float:
        return (self.until - self.since) / self.buckets

    def top_sources(self, n: int = TOP) -> list[Source]:
        return sorted(self.sources.values(), key=lambda s: (-s.scans, -s.probes, s.address))[:n]


def _int(text: str | None) -> int:
    try:
        return max(0, int(text or "0"))
    except ValueError:
        return 0


def summarize(records: Iterable[dict[str, str]], since: float, until: float, buckets: int = 24) -> Summary:
    """The figures of the records whose time is in [since, until)."""
    s = Summary(since, until, buckets, [0] * buckets, [0] * buckets)
    width = (until - since) / buckets
    for f in records:
        t = R.record_time(f)
        if t is None or not since <= t < until:
            continue
        slot = min(buckets - 1, int((t - since) / width))
        ident, event = f.get(R.F_IDENT, ""), f.get(R.F_EVENT, "")
        if ident == R.DETECTOR_IDENTIFIER and event in ("scan", "summary"):
            src = f.get(R.F_SRC, "")
            if not src:
                continue
            proto = f.get(R.F_PROTO, "")
            st = s.sources.setdefault(src, Source(src))
            st.hits[proto] = max(st.hits.get(proto, 0), _int(f.get(R.F_HITS)))
            st.distinct[proto] = max(st.distinct.get(proto, 0), _int(f.get(R.F_PORTS)))
            if event == "scan":
                port = f"{proto}/{f.get(R.F_PORT, '')}"
                kind = f"{proto} {f.get(R.F_SCAN, '')}"
                s.scans += 1
                s.scans_over_time[slot] += 1
                s.ports[port] += 1
                s.kinds[kind] += 1
                st.scans += 1
                st.kinds[kind] += 1
                if port not in st.ports:
                    st.ports.append(port)
        elif ident == R.RESPONDER_IDENTIFIER and f.get(R.F_JAIL):
            if event == "ban" and not f.get(R.F_DETAIL, "").startswith("retry="):
                s.bans += 1
                s.bans_over_time[slot] += 1
                s.bans_by_jail[f[R.F_JAIL]] += 1
                for action in filter(None, f.get(R.F_ACTION, "").split(",")):
                    s.bans_by_action[action] += 1
                src = f.get(R.F_SRC, "")
                if src in s.sources:
                    s.sources[src].bans += 1
            elif event == "unban" and not f.get(R.F_DETAIL, "").startswith("retry="):
                s.unbans += 1
            elif event == "failed":
                s.failed += 1
    return s


def sparkline(values: list[int]) -> str:
    top = max(values, default=0)
    if top == 0:
        return SPARKS[0] * len(values)
    return "".join(SPARKS[min(len(SPARKS) - 1, math.ceil(v / top * (len(SPARKS) - 1)))] if v else " "
                   for v in values)


def _stamp(t: float) -> str:
    import time

    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t))


def _clean(text: str, width: int = 40) -> str:
    """Printable text for a terminal (record fields may carry anything a local writer put there)."""
    out = "".join(c if c.isprintable() else "?" for c in text)
    return out if len(out) <= width else out[: width - 1] + "…"


def render_text(s: Summary, top_n: int = TOP) -> str:
    """The compact terminal report (``top_n`` sources and entries per list)."""
    lines = [f"portsentinel report {_stamp(s.since)} → {_stamp(s.until)} "
             f"({s.buckets} × {s.bucket_seconds / 60:g} min)",
             "",
             f"  scans    {s.scans:>7}  {sparkline(s.scans_over_time)}",
             f"  bans     {s.bans:>7}  {sparkline(s.bans_over_time)}",
             f"  sources  {len(s.sources):>7}   unbans {s.unbans}   failed actions {s.failed}",
             ""]
    top = s.top_sources(top_n)
    if top:
        lines.append(f"  {'top sources':<39} {'scans':>5} {'probes':>7} {'ports':>6} {'bans':>4}  kinds; ports")
        for src in top:
            kinds = ", ".join(k for k, _ in src.kinds.most_common(3))
            ports = ", ".join(src.ports[:5]) + (" …" if len(src.ports) > 5 else "")
            lines.append(f"  {_clean(src.address, 39):<39} {src.scans:>5} {src.probes:>7} {src.nports:>6} "
                         f"{src.bans:>4}  {_clean(kinds, 30)}; {_clean(ports, 40)}")
        lines.append("")
    for title, counts in (("ports most probed (scan records)", s.ports), ("scan kinds", s.kinds),
                          ("bans by jail", s.bans_by_jail), ("bans by action", s.bans_by_action)):
        if not counts:
            continue
        lines.append(f"  {title}")
        peak = max(counts.values())
        for name, n in counts.most_common(top_n):
            bar = "█" * max(1, round(n / peak * 20))
            lines.append(f"    {_clean(name, 30):<30} {n:>6}  {bar}")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


# --- the adapter: where the records come from ---------------------------------------------------------------

def _journal(since: float, until: float) -> Iterator[dict[str, str]]:
    argv = ["journalctl", "--no-pager", "-o", "json", "--output-fields",
            ",".join((R.F_IDENT, R.F_EVENT, R.F_SRC, R.F_PROTO, R.F_PORT, R.F_SCAN, R.F_HITS, R.F_PORTS, R.F_TIME,
                      R.F_JAIL, R.F_ACTION, R.F_DETAIL)),
            f"--since=@{int(since)}", f"--until=@{int(until) + 1}",
            f"{R.F_IDENT}={R.DETECTOR_IDENTIFIER}", f"{R.F_IDENT}={R.RESPONDER_IDENTIFIER}"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise OSError(f"journalctl: {proc.stderr.strip() or f'exit {proc.returncode}'}")
    for line in proc.stdout.splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict):
            fields = {k: v for k, v in rec.items() if isinstance(v, str)}
            srcs, nets = rec.get(R.F_SRC), rec.get(R.F_SRC_NET)
            if isinstance(nets, list):  # aggregated network bans: each PS_SRC is its network's own address
                srcs = [net.partition("/")[0] for net in nets if isinstance(net, str)]
            if isinstance(srcs, list):  # an aggregated ban record (docs/records.md "Volume"): one per address
                for src in srcs:
                    if isinstance(src, str):
                        yield {**fields, R.F_SRC: src}
            else:
                yield fields


def _files(paths: list[str]) -> Iterator[dict[str, str]]:
    for path in paths:
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                if isinstance(rec, dict):
                    yield {k: v for k, v in rec.items() if isinstance(v, str)}


def load(since: float, until: float, files: list[str] | None = None) -> list[dict[str, str]]:
    """Both stages' records: from ``files`` (JSON lines) when given, else from the journal."""
    if files:
        missing = [p for p in files if not Path(p).exists()]
        if missing:
            raise OSError(f"no such file: {', '.join(missing)}")
        return list(_files(files))
    return list(_journal(since, until))
