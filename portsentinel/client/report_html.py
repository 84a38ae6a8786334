"""``portsentinel report --html``: one self-contained HTML file, charts drawn as inline SVG (no script, no
fetch, no font or style from elsewhere: it opens the same offline). Every text from a record is escaped.

Pure: a :class:`~.report.Summary` in, the document out.
"""

from __future__ import annotations

import time
from collections import Counter
from html import escape

from .report import Summary

SCAN_COLOUR = "#d9534f"
BAN_COLOUR = "#2b6cb0"
BAR_COLOUR = "#4a5568"

STYLE = """
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;margin:2em auto;max-width:1000px;color:#1a202c}
h1{font-size:1.4em;margin-bottom:.2em}h2{font-size:1.1em;margin-top:1.8em;border-bottom:1px solid #e2e8f0}
.muted{color:#718096}.kpis{display:flex;gap:1em;flex-wrap:wrap}.kpi{background:#f7fafc;border:1px solid #e2e8f0;
border-radius:6px;padding:.6em 1em;min-width:7em}.kpi b{display:block;font-size:1.6em}
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.25em .5em;border-bottom:1px solid #edf2f7}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}svg text{font:11px sans-serif;fill:#4a5568}
.grid{display:grid;grid-template-columns:1fr 1fr;gap:1.5em}
"""


def _stamp(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t))


def time_chart(s: Summary, width: int = 960, height: int = 220) -> str:
    """Scans and bans per bucket as grouped bars, with the bucket start times under them."""
    left, bottom, top = 40, 30, 10
    plot_w, plot_h = width - left - 10, height - bottom - top
    peak = max([*s.scans_over_time, *s.bans_over_time, 1])
    slot = plot_w / s.buckets
    bar = max(1.0, slot * 0.4)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             f'aria-label="scans and bans over time">']
    for i in range(5):  # horizontal grid with values
        v = peak * i / 4
        y = top + plot_h - plot_h * i / 4
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{width - 10}" y2="{y:.1f}" stroke="#edf2f7"/>'
                     f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end">{v:.4g}</text>')
    for i, (scans, bans) in enumerate(zip(s.scans_over_time, s.bans_over_time, strict=True)):
        x = left + i * slot + slot * 0.1
        for j, (n, colour, what) in enumerate(((scans, SCAN_COLOUR, "scans"), (bans, BAN_COLOUR, "bans"))):
            h = plot_h * n / peak
            parts.append(f'<rect x="{x + j * bar:.1f}" y="{top + plot_h - h:.1f}" width="{bar:.1f}" '
                         f'height="{h:.1f}" fill="{colour}"><title>{n} {what} from '
                         f'{escape(_stamp(s.since + i * s.bucket_seconds))}</title></rect>')
        if i % max(1, s.buckets // 6) == 0:
            label = time.strftime("%H:%M", time.localtime(s.since + i * s.bucket_seconds))
            parts.append(f'<text x="{x:.1f}" y="{height - 10}">{label}</text>')
    parts.append("</svg>")
    return "".join(parts)


def bar_chart(counts: Counter[str], label: str, width: int = 460, row: int = 22, n: int = 10) -> str:
    """Horizontal bars of the ``n`` largest counts."""
    items = counts.most_common(n)
    if not items:
        return '<p class="muted">none</p>'
    height = row * len(items) + 4
    peak = max(v for _, v in items)
    name_w, plot_w = 140, width - 140 - 50
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             f'aria-label="{escape(label)}">']
    for i, (name, v) in enumerate(items):
        y = i * row + 2
        w = max(1.0, plot_w * v / peak)
        parts.append(f'<text x="{name_w - 6}" y="{y + 15}" text-anchor="end">{escape(name[:24])}</text>'
                     f'<rect x="{name_w}" y="{y + 3}" width="{w:.1f}" height="{row - 6}" fill="{BAR_COLOUR}">'
                     f'<title>{escape(name)}: {v}</title></rect>'
                     f'<text x="{name_w + w + 6:.1f}" y="{y + 15}">{v}</text>')
    parts.append("</svg>")
    return "".join(parts)


def render_html(s: Summary) -> str:
    kpis = (("scans", s.scans), ("sources", len(s.sources)), ("bans", s.bans), ("unbans", s.unbans),
            ("failed actions", s.failed))
    rows = []
    for src in s.top_sources():
        kinds = ", ".join(f"{k} ({n})" for k, n in src.kinds.most_common(4))
        ports = ", ".join(src.ports[:8]) + (" …" if len(src.ports) > 8 else "")
        rows.append(f"<tr><td>{escape(src.address)}</td><td class=n>{src.scans}</td><td class=n>{src.probes}</td>"
                    f"<td class=n>{src.nports}</td><td class=n>{src.bans}</td><td>{escape(kinds)}</td>"
                    f"<td>{escape(ports)}</td></tr>")
    table = ("<table><tr><th>source</th><th class=n>scans</th><th class=n>probes</th><th class=n>ports</th>"
             "<th class=n>bans</th><th>scan kinds</th><th>ports</th></tr>" + "".join(rows) + "</table>"
             if rows else '<p class="muted">no scanning source in this range</p>')
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>portsentinel report {escape(_stamp(s.since))} – {escape(_stamp(s.until))}</title>
<style>{STYLE}</style></head>
<body>
<h1>portsentinel report</h1>
<p class="muted">{escape(_stamp(s.since))} to {escape(_stamp(s.until))}, {s.buckets} intervals of
{s.bucket_seconds / 60:g} minutes</p>
<div class="kpis">{"".join(f'<div class="kpi"><b>{v}</b>{escape(k)}</div>' for k, v in kpis)}</div>
<h2>Scans and bans over time</h2>
<p><span style="color:{SCAN_COLOUR}">■</span> scans &nbsp; <span style="color:{BAN_COLOUR}">■</span> bans</p>
{time_chart(s)}
<h2>Top sources</h2>
{table}
<div class="grid">
<div><h2>Ports most probed</h2>{bar_chart(s.ports, "ports most probed")}</div>
<div><h2>Scan kinds</h2>{bar_chart(s.kinds, "scan kinds")}</div>
<div><h2>Bans by jail</h2>{bar_chart(s.bans_by_jail, "bans by jail")}</div>
<div><h2>Bans by action</h2>{bar_chart(s.bans_by_action, "bans by action")}</div>
</div>
</body></html>
"""
