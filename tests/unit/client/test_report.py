"""portsentinel report: the figures from records (pure), the terminal form, the HTML form (escaped, no fetch)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from portsentinel import record as R
from portsentinel.client.report import render_text, sparkline, summarize
from portsentinel.client.report_cmd import run
from portsentinel.client.report_html import render_html

T0 = 1_800_000_000.0
DET, RESP = R.DETECTOR_IDENTIFIER, R.RESPONDER_IDENTIFIER


def det(t: float, event: str, src: str, proto: str = "tcp", port: str = "1", scan: str = "syn", hits: int = 1,
        ports: int = 1) -> dict[str, str]:
    return {R.F_IDENT: DET, R.F_EVENT: event, R.F_SRC: src, R.F_PROTO: proto, R.F_PORT: port, R.F_SCAN: scan,
            R.F_HITS: str(hits), R.F_PORTS: str(ports), R.F_TIME: f"{T0 + t:.6f}"}


def resp(t: float, event: str, src: str, jail: str = "portsentinel", action: str = "nftables",
         detail: str = "") -> dict[str, str]:
    rec = {R.F_IDENT: RESP, R.F_EVENT: event, R.F_SRC: src, R.F_JAIL: jail, R.F_ACTION: action,
           R.F_TIME: f"{T0 + t:.6f}"}
    if detail:
        rec[R.F_DETAIL] = detail
    return rec


RECORDS = [
    det(10, "scan", "192.0.2.1", port="21", hits=1),
    det(40, "summary", "192.0.2.1", port="21", hits=900, ports=850),
    det(12, "scan", "192.0.2.1", proto="udp", port="53", scan="udp", hits=1),
    det(3000, "scan", "2001:db8::5", port="22", scan="fin", hits=3, ports=3),
    det(3600 * 30, "scan", "198.51.100.9"),  # outside the range
    {R.F_IDENT: DET, R.F_EVENT: "start", R.F_TIME: f"{T0:.6f}"},
    resp(11, "ban", "192.0.2.1", action="nftables,mail"),
    resp(3001, "ban", "2001:db8::5"),
    resp(3002, "ban", "2001:db8::5", action="nftables", detail="retry=1"),  # a retry, not a ban
    {R.F_IDENT: RESP, R.F_EVENT: "ban", R.F_ACTION: "restore", R.F_TIME: f"{T0 + 5:.6f}"},  # no jail
    resp(600, "unban", "192.0.2.1", detail="expired"),
    resp(601, "failed", "192.0.2.1", action="mail"),
]


def test_summarize() -> None:
    s = summarize(RECORDS, T0, T0 + 24 * 3600, 24)
    assert (s.scans, s.bans, s.unbans, s.failed) == (3, 2, 1, 1)
    assert s.scans_over_time[0] == 3 and sum(s.scans_over_time) == 3
    assert s.bans_over_time[0] == 2
    assert s.ports == {"tcp/21": 1, "udp/53": 1, "tcp/22": 1}
    assert s.kinds == {"tcp syn": 1, "udp udp": 1, "tcp fin": 1}
    assert s.bans_by_jail == {"portsentinel": 2} and s.bans_by_action == {"nftables": 2, "mail": 1}
    top = s.top_sources()
    assert [t.address for t in top] == ["192.0.2.1", "2001:db8::5"]
    assert top[0].probes == 901 and top[0].nports == 851 and top[0].bans == 1
    assert top[0].ports == ["tcp/21", "udp/53"]


def test_sparkline() -> None:
    assert sparkline([0, 1, 2, 4, 8]) == " ▂▃▅█"
    assert sparkline([0, 0]) == "▁▁"


def test_text_report() -> None:
    text = render_text(summarize(RECORDS, T0, T0 + 24 * 3600, 24))
    assert re.search(r"scans\s+3\s", text) and re.search(r"bans\s+2\s", text)
    assert "192.0.2.1" in text and "tcp/21" in text and "nftables" in text


def test_text_report_keeps_control_characters_out() -> None:
    rec = det(1, "scan", "192.0.2.1", port="21", scan="syn\x1b[2J")
    assert "\x1b" not in render_text(summarize([rec], T0, T0 + 60, 2))


def test_html_is_self_contained_and_escaped() -> None:
    rec = resp(1, "ban", "192.0.2.1", jail="<script>alert(1)</script>")
    doc = render_html(summarize([*RECORDS, rec], T0, T0 + 24 * 3600, 24))
    assert "<script>" not in doc and "&lt;script&gt;" in doc
    assert not re.search(r"(?:src|href)\s*=|url\(|@import|https?://(?!www\.w3\.org/2000/svg)", doc)
    assert doc.count("<svg") == 5


def test_run_on_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    alerts, decisions = tmp_path / "alerts.jsonl", tmp_path / "decisions.jsonl"
    alerts.write_text("".join(json.dumps(r) + "\n" for r in RECORDS if r[R.F_IDENT] == DET) + "not json\n")
    decisions.write_text("".join(json.dumps(r) + "\n" for r in RECORDS if r[R.F_IDENT] == RESP))
    html = tmp_path / "r.html"
    assert run("24h", str(html), [str(alerts), str(decisions)], now=T0 + 24 * 3600) == 0
    out = capsys.readouterr().out
    assert re.search(r"scans\s+3\s", out) and str(html) in out
    assert html.read_text().startswith("<!DOCTYPE html>")
    assert run("24x", None, [str(alerts)]) == 2
    assert run("24h", None, [str(tmp_path / "missing.jsonl")]) == 2
