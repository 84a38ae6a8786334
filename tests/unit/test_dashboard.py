"""The Grafana dashboard (grafana/portsentinel-dashboard.json): every query names only metrics the daemons export
(docs/metrics.md). The lab test (test_metrics_lab.py) has a real Prometheus parse and run each one."""

from __future__ import annotations

import json

import pytest

from portsentinel.detector.metrics import NAMES as DETECTOR_NAMES
from portsentinel.responder.metrics import NAMES as RESPONDER_NAMES
from tests.lab.prom import DASHBOARD, dashboard_queries, family, promql_names

EXPORTED = frozenset(DETECTOR_NAMES) | frozenset(RESPONDER_NAMES)


def test_extractor() -> None:
    expr = ('histogram_quantile(0.9, sum by (le) (rate(portsentinel_responder_ban_latency_seconds_bucket[1m])))'
            ' + on(job) group_left(instance) max without (mode) (foo_total{a="b",c=~"x(y)"} offset 5m) > bool 1e3')
    assert promql_names(expr) == {"portsentinel_responder_ban_latency_seconds_bucket", "foo_total"}
    assert family("portsentinel_responder_ban_latency_seconds_bucket") == "portsentinel_responder_ban_latency_seconds"


def test_dashboard_is_grafana_json() -> None:
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] == "portsentinel" and dash["__inputs"][0]["name"] == "DS_PROMETHEUS"
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    titles = " ".join(p["title"] for p in dash["panels"]).lower()
    for want in ("scans", "bans", "in force", "scan kinds", "ports", "action failures", "latency", "kernel drops"):
        assert want in titles, want


@pytest.mark.parametrize(("title", "expr"), dashboard_queries())
def test_every_query_names_exported_metrics(title: str, expr: str) -> None:
    names = promql_names(expr)
    assert names, f"{title}: {expr} selects no metric"
    assert {family(n) for n in names} <= EXPORTED, f"{title}: {sorted(names)} not all exported"
