"""Metrics (docs/metrics.md): the listen grammar, the atomic textfile, the config keys, and what each daemon's
collector exports — names as documented, Prometheus conventions, no address in any label."""

from __future__ import annotations

import ipaddress
import os
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from portsentinel import record as R
from portsentinel.common.metrics import Exporter, parse_listen
from portsentinel.detector.config.model import ConfigError, DetectorConfig
from portsentinel.detector.config.own_grammar import parse_config_text
from portsentinel.detector.metrics import MAX_PORTS, DetectorCollector, probe_kinds, tally_record
from portsentinel.detector.metrics import NAMES as DETECTOR_NAMES
from portsentinel.detector.pipeline import Counters
from portsentinel.detector.service import Detector
from portsentinel.responder.core.bans import Ban
from portsentinel.responder.metrics import BUCKETS, Histogram, ResponderMetrics, unban_reason
from portsentinel.responder.metrics import NAMES as RESPONDER_NAMES
from tests.conftest import ROOT


class NullSink:
    name = "null"

    def write(self, record: R.Record) -> None:
        pass

    def reopen(self) -> None:
        pass

    def close(self) -> None:
        pass


@pytest.mark.parametrize(("text", "want"), [
    ("9781", ("127.0.0.1", 9781)),
    ("127.0.0.1:9781", ("127.0.0.1", 9781)),
    ("[::1]:9782", ("::1", 9782)),
    (" 0.0.0.0:80 ", ("0.0.0.0", 80)),
])
def test_parse_listen(text: str, want: tuple[str, int]) -> None:
    assert parse_listen(text) == want


@pytest.mark.parametrize(("text", "why"), [
    ("localhost:9781", "not an IP address"),
    ("::1:9781", "brackets"),
    ("127.0.0.1:0", "1..65535"),
    ("127.0.0.1:x", "1..65535"),
    ("[::1]9781", "[IPV6]:PORT"),
    ("", "1..65535"),
])
def test_parse_listen_refuses(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why.replace("[", r"\[").replace(".", r"\.")):
        parse_listen(text)


def test_detector_config_keys() -> None:
    cfg, _ = parse_config_text("[detector]\nmetrics_listen = 127.0.0.1:9781\n"
                               "metrics_textfile = /tmp/x.prom\nmetrics_interval = 15s\n", "d.conf")
    assert (cfg.metrics_listen, cfg.metrics_textfile, cfg.metrics_interval) == ("127.0.0.1:9781", "/tmp/x.prom", 15)
    assert DetectorConfig().metrics_listen == "" and DetectorConfig().metrics_textfile == ""  # off by default
    with pytest.raises(ConfigError, match=r"^d\.conf:3: metrics_listen: .*not an IP address"):
        parse_config_text("[detector]\n\nmetrics_listen = example.org:9781\n", "d.conf")


def test_textfile_is_written_whole_and_renamed(tmp_path: Path) -> None:
    metrics = ResponderMetrics()
    exp = Exporter([metrics], textfile=str(tmp_path / "r.prom"), interval=5.0)
    old = os.umask(0o077)
    try:
        exp.tick(100.0)
    finally:
        os.umask(old)
    path = tmp_path / "r.prom"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # node_exporter's user reads it, whatever the umask
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.prom"]  # no temporary file left
    names = {f.name for f in text_string_to_metric_families(path.read_text())}
    assert "portsentinel_responder_bans" in names
    metrics.on_record({R.F_EVENT: "ban", R.F_JAIL: "j", R.F_SRC: "192.0.2.1", R.F_ACTION: "nftables"})
    exp.tick(101.0)  # not due yet
    assert "portsentinel_responder_bans_total{jail=\"j\"}" not in path.read_text()
    exp.tick(105.0)
    assert "portsentinel_responder_bans_total{jail=\"j\"} 1.0" in path.read_text()


def test_textfile_error_is_reported_not_raised(tmp_path: Path) -> None:
    exp = Exporter([ResponderMetrics()], textfile=str(tmp_path / "missing" / "r.prom"))
    exp.write()
    assert "r.prom" in exp.problem


def test_probe_kinds_maps_flags_to_scan_kinds() -> None:
    kinds = [0] * 257
    kinds[0x02] = 5  # SYN
    kinds[0x01] = 2  # FIN
    kinds[0x29] = 1  # XMAS (FIN PSH URG)
    kinds[0x12] = 7  # SYN/ACK: not a probe kind, never counted
    kinds[256] = 3  # UDP
    got = probe_kinds(kinds, {("sctp", "init"): 4})
    assert got == {("tcp", "syn"): 5, ("tcp", "fin"): 2, ("tcp", "xmas"): 1, ("udp", "udp"): 3, ("sctp", "init"): 4}


def _families(registry: CollectorRegistry) -> dict[str, tuple[str, list[tuple[str, dict[str, str]]]]]:
    text = generate_latest(registry).decode()
    return {f.name: (f.type, [(s.name, s.labels) for s in f.samples]) for f in text_string_to_metric_families(text)}


def _check_conventions(fams: dict[str, tuple[str, list[tuple[str, dict[str, str]]]]], names: tuple[str, ...]) -> None:
    exported = set()
    for name, (kind, samples) in fams.items():
        for sample, labels in samples:
            exported.add(sample)
            for value in labels.values():  # bounded cardinality: never an address
                with pytest.raises(ValueError):
                    ipaddress.ip_network(value, strict=False)
        if kind == "counter":
            assert all(s.endswith(("_total", "_created")) for s, _ in samples), name
    for n in names:  # every documented name is exported (histograms by their series)
        assert n in exported or n + "_count" in exported, n
    doc = (ROOT / "docs" / "metrics.md").read_text()
    for n in names:
        assert f"`{n}`" in doc, f"{n} missing from docs/metrics.md"


def test_scan_ports_are_capped() -> None:
    c = Counters()
    for port in range(MAX_PORTS + 10):
        tally_record(c, R.Record({R.F_EVENT: "scan", R.F_PROTO: "tcp", R.F_PORT: str(port)}))
    tally_record(c, R.Record({R.F_EVENT: "summary", R.F_PROTO: "tcp", R.F_PORT: "1"}))
    assert len(c.ports) == MAX_PORTS + 1 and c.ports[("tcp", "other")] == 10
    assert c.events == {"scan": MAX_PORTS + 10, "summary": 1}


def test_detector_exports_its_documented_names() -> None:
    det = Detector(DetectorConfig(), sink=NullSink())
    det.waker.close()
    det.sel.close()
    det.counters.kinds[0x02] = 3
    det.counters.bad["truncated"] = 1
    tally_record(det.counters, R.Record({R.F_EVENT: "scan", R.F_PROTO: "tcp", R.F_PORT: "143"}))
    det.counters.drops = 2
    registry = CollectorRegistry()
    registry.register(DetectorCollector(det))
    fams = _families(registry)
    _check_conventions(fams, DETECTOR_NAMES)
    text = generate_latest(registry).decode()
    assert 'portsentinel_detector_probes_total{protocol="tcp",scan="syn"} 3.0' in text
    assert 'portsentinel_detector_bad_packets_total{reason="truncated"} 1.0' in text
    assert "portsentinel_detector_kernel_drops_total 2.0" in text
    assert 'portsentinel_detector_scan_ports_total{port="143",protocol="tcp"} 1.0' in text


def test_responder_counts_its_records() -> None:
    m = ResponderMetrics()
    ban = Ban("portsentinel", "2001:db8:1::/64", 1000.0, 2000.0)
    m.ban_from(ban, {R.F_TIME: "0"})
    recs: list[dict[str, str]] = [
        {R.F_EVENT: "ban", R.F_JAIL: "portsentinel", R.F_SRC: "2001:db8:1::5", R.F_SRC_NET: "2001:db8:1::/64",
         R.F_ACTION: "nftables,mail"},
        {R.F_EVENT: "ban", R.F_JAIL: "portsentinel", R.F_SRC: "192.0.2.9", R.F_ACTION: "kernel-trap"},
        {R.F_EVENT: "ban", R.F_ACTION: "restore", R.F_DETAIL: "restored=3 expired=0"},  # no jail: not a ban
        {R.F_EVENT: "unban", R.F_JAIL: "portsentinel", R.F_SRC: "192.0.2.1", R.F_ACTION: "nftables",
         R.F_DETAIL: "expired"},
        {R.F_EVENT: "unban", R.F_JAIL: "portsentinel", R.F_SRC: "192.0.2.2", R.F_ACTION: "nftables",
         R.F_DETAIL: "covered by 192.0.2.0/24"},
        {R.F_EVENT: "unban", R.F_JAIL: "portsentinel", R.F_SRC: "192.0.2.3", R.F_ACTION: "", R.F_DETAIL: "manual"},
        {R.F_EVENT: "failed", R.F_JAIL: "portsentinel", R.F_ACTION: "mail",
         R.F_DETAIL: "phase=actionban attempt=1"},
        {R.F_EVENT: "ignored", R.F_JAIL: "portsentinel", R.F_SRC: "192.0.2.4",
         R.F_DETAIL: "never banned: default gateway"},
        {R.F_EVENT: "ignored", R.F_JAIL: "portsentinel", R.F_SRC: "192.0.2.5",
         R.F_DETAIL: "ban cap reached (10 per minute): not executed"},
        {R.F_EVENT: "ignored", R.F_JAIL: "sshd", R.F_DETAIL: "matched host 'x' is not an IP address"},
    ]
    for rec in recs:
        m.on_record(rec)
    assert m.bans == {"portsentinel": 1} and m.trap_bans == {"portsentinel": 1}
    assert m.unbans == {"expiry": 1, "covered": 1, "manual": 1}
    assert m.runs == {("nftables", "ban"): 1, ("mail", "ban"): 2, ("nftables", "unban"): 2}
    assert m.failures == {("mail", "ban"): 1}
    assert m.never == {"portsentinel": 1} and m.capped == {"portsentinel": 1} and m.ignored == {"sshd": 1}
    assert m.latency.counts[-1] == 1  # PS_TIME 0: decades ago, in the +Inf bucket
    m.entries("file:/x.jsonl", {R.F_TIME: "10"}, 3, 12.5)
    assert m.read == {"file:/x.jsonl": 3} and m.lag == {"file:/x.jsonl": 2.5}
    registry = CollectorRegistry()
    registry.register(m)
    _check_conventions(_families(registry), tuple(n for n in RESPONDER_NAMES
                                                  if n not in ("portsentinel_responder_failures_total",
                                                               "portsentinel_responder_bans_in_force")))


@pytest.mark.parametrize(("detail", "want"), [("expired", "expiry"), ("expired while stopped", "expiry"),
                                              ("manual", "manual"), ("covered by 10.0.0.0/8", "covered"),
                                              ("reload", "reload"), ("jail removed", "reload"),
                                              ("lost", "other")])
def test_unban_reason_is_bounded(detail: str, want: str) -> None:
    assert unban_reason(detail) == want


@given(st.lists(st.one_of(st.floats(0, 100, allow_nan=False), st.sampled_from(list(BUCKETS))), max_size=50))
def test_the_latency_histogram_counts_each_value_in_its_first_bucket_at_or_above_it(values: list[float]) -> None:
    h = Histogram(BUCKETS)
    for v in values:
        h.observe(v)
    expected = [sum(1 for v in values if v <= b) for b in BUCKETS] + [len(values)]
    assert [n for _, n in h.cumulative()] == expected
    assert h.sum == pytest.approx(sum(values))
