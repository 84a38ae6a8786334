"""Metrics with real parts (docs/metrics.md): a real Prometheus server in the victim namespace scrapes both
daemons while nmap scans the victim, and answers PromQL through its HTTP API; a real node_exporter reads the
textfiles the daemons write."""

from __future__ import annotations

from pathlib import Path

import pytest

from portsentinel.detector.metrics import NAMES as DETECTOR_NAMES
from portsentinel.responder.metrics import NAMES as RESPONDER_NAMES
from tests.lab.detector import DetectorProcess, nmap
from tests.lab.netns import Lab
from tests.lab.pipeline import ResponderProcess, make_config
from tests.lab.prom import NodeExporter, Prometheus, dashboard_queries, family, promql_names, sample, total

pytestmark = pytest.mark.lab

PORTS = "1-60"
NPORTS = 60


def _jail(base: Path) -> str:
    return (f"[DEFAULT]\nlogpath = {base}/alerts.jsonl\nbantime = 120\nbantime.increment = false\n"
            "[portsentinel]\nenabled = true\nfilter = portsentinel\naction = nftables[name=scan]\n")


def _daemons(lab: Lab, base: Path, metrics: str, responder_args: list[str]) -> tuple[DetectorProcess,
                                                                                        ResponderProcess]:
    conf = base / "detector.conf"
    conf.write_text(f"[detector]\nmodes = atcp\nadvanced_tcp = 100\n{metrics}")
    det = DetectorProcess(lab.victim, base / "alerts.jsonl", config=conf, extra=["--wake", str(base / "wake.sock")])
    resp = ResponderProcess(lab.victim, base, make_config(base, _jail(base)))
    resp.argv += responder_args
    return det, resp


def _scan(lab: Lab, resp: ResponderProcess, sources: list[str]) -> None:
    for src in sources:
        nmap(lab.attacker, "-sS", lab.victim.addr4, PORTS, source=src, extra=["-T5", "--min-rate", "2000"])
    for src in sources:
        assert resp.wait_for(lambda r, s=src: r.get("PS_EVENT") == "ban" and r.get("PS_SRC") == s), resp.stderr()


def test_prometheus_scrapes_both_daemons_during_a_scan(mlab: Lab, tmp_path: Path) -> None:
    sources = [a4 for a4, _ in mlab.aliases(mlab.attacker, 2)]
    det, resp = _daemons(mlab, tmp_path, "metrics_listen = 127.0.0.1:9781\n",
                         ["--metrics-listen", "127.0.0.1:9782"])
    prom = Prometheus(mlab.victim, tmp_path / "prom", {"detector": "127.0.0.1:9781", "responder": "127.0.0.1:9782"})
    with det, resp:
        prom.start()
        try:
            assert prom.wait_value('sum(up{job=~"detector|responder"})', lambda v: v == 2) == 2
            _scan(mlab, resp, sources)
            # One ban per scanner, counted and in force; each with a latency observation.
            assert prom.wait_value("sum(portsentinel_responder_bans_total)", lambda v: v >= 2) == len(sources)
            assert prom.value('portsentinel_responder_bans_in_force{jail="portsentinel"}') == len(sources)
            assert prom.wait_value("portsentinel_responder_ban_latency_seconds_count",
                                   lambda v: v >= 2) == len(sources)
            # Every port scanned was a probe (nmap may send some twice), all TCP SYN.
            probes = prom.wait_value('sum(portsentinel_detector_probes_total{protocol="tcp",scan="syn"})',
                                     lambda v: v >= NPORTS * len(sources))
            assert probes is not None and probes >= NPORTS * len(sources)
            assert prom.value("sum(portsentinel_detector_kernel_drops_total)") == 0
            scans = prom.wait_value('portsentinel_detector_records_total{event="scan"}', lambda v: v >= 2)
            assert scans == len(sources)
            assert prom.value('sum(rate(portsentinel_detector_capture_cpu_seconds_total[10s])) >= 0') is not None
            assert prom.value("sum(portsentinel_responder_action_failures_total) or vector(0)") == 0
            runs = prom.value('portsentinel_responder_action_runs_total{action="nftables",phase="ban"}')
            assert runs == len(sources)
            assert prom.value("count(portsentinel_responder_records_forged_total)") == 1
            # The Grafana dashboard: Prometheus itself parses and runs every query (an API error raises); the names
            # both daemons really export are the documented ones, and the dashboard names only those.
            for _title, expr in dashboard_queries():
                prom.query(expr)
            live = {n for n in prom.label_values("__name__") if n.startswith("portsentinel_")}
            documented = set(DETECTOR_NAMES) | set(RESPONDER_NAMES)
            assert {family(n) for n in live} <= documented
            assert {"portsentinel_detector_probes_total", "portsentinel_responder_bans_total",
                    "portsentinel_responder_ban_latency_seconds_bucket"} <= live
            used = {family(n) for _t, e in dashboard_queries() for n in promql_names(e)}
            assert used <= documented
        finally:
            prom.stop()
        assert resp.stop() == 0
        assert det.stop() == 0


def test_node_exporter_reads_the_textfiles(mlab: Lab, tmp_path: Path) -> None:
    sources = [a4 for a4, _ in mlab.aliases(mlab.attacker, 1)]
    textdir = tmp_path / "textfile"
    textdir.mkdir()
    det, resp = _daemons(mlab, tmp_path, f"metrics_textfile = {textdir}/portsentinel_detector.prom\n"
                                         "metrics_interval = 1\n",
                         ["--metrics-textfile", f"{textdir}/portsentinel_responder.prom", "--metrics-interval", "1"])
    node = NodeExporter(mlab.victim, textdir, tmp_path / "node_exporter.log")
    with det, resp:
        node.start()
        try:
            _scan(mlab, resp, sources)
            assert resp.stop() == 0  # each daemon writes its textfile once more at stop: the final counts
            assert det.stop() == 0
            text = node.scrape()
        finally:
            node.stop()
    assert sample(text, "node_textfile_scrape_error") == 0, text[:2000]
    assert total(text, "portsentinel_responder_bans_total") == 1
    assert total(text, "portsentinel_detector_probes_total") >= NPORTS
    assert total(text, "portsentinel_detector_kernel_drops_total") == 0
    assert sample(text, "portsentinel_detector_records_total", event="stop") == 1
    # Written by rename: no temporary file is left beside them.
    assert sorted(p.name for p in textdir.iterdir()) == ["portsentinel_detector.prom", "portsentinel_responder.prom"]
