"""A real Prometheus server and a real node_exporter inside a lab namespace, and HTTP asked from inside it.

Both listen on the namespace's own loopback; their configuration and data live in the test's temp dir. Every
HTTP request runs in the namespace (``ip netns exec``), so nothing is asked of the host's network.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
from pathlib import Path
from typing import Any

from .detector import tool
from .netns import Host, LabError

_GET = ("import sys,urllib.request\n"
        "try:\n r=urllib.request.urlopen(sys.argv[1],timeout=5); sys.stdout.write(r.read().decode())\n"
        "except Exception as e: sys.stdout.write('ERROR '+str(e))\n")


def http_get(host: Host, url: str) -> str:
    """GET ``url`` from inside ``host`` ('ERROR …' when it fails)."""
    return host.run([tool("python"), "-c", _GET, url], check=False, timeout=20).stdout


def need(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        raise LabError(f"{binary} missing: run scripts/setup.sh --test")
    return path


class Prometheus:
    """``prometheus`` in ``host`` scraping ``targets`` (job → HOST:PORT) every second."""

    def __init__(self, host: Host, base: Path, targets: dict[str, str], port: int = 9090) -> None:
        self.host = host
        self.base = base
        self.url = f"http://127.0.0.1:{port}"
        base.mkdir(parents=True, exist_ok=True)
        jobs = "".join(f"  - job_name: {job}\n    static_configs:\n      - targets: ['{target}']\n"
                       for job, target in targets.items())
        self.config = base / "prometheus.yml"
        self.config.write_text(f"global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n{jobs}")
        self.argv = [need("prometheus"), f"--config.file={self.config}", f"--storage.tsdb.path={base / 'data'}",
                     f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"]
        self.err = base / "prometheus.stderr"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30) -> Prometheus:
        with open(self.err, "wb") as fh:
            self.proc = self.host.popen(self.argv, stdout=fh, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise LabError(f"prometheus exited {self.proc.returncode}: {self.err.read_text()[-2000:]}")
            if http_get(self.host, self.url + "/-/ready").startswith("Prometheus Server is Ready"):
                return self
            time.sleep(0.3)
        raise LabError(f"prometheus not ready: {self.err.read_text()[-2000:]}")

    def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant query through the HTTP API: the result vector (raises on an API error)."""
        text = http_get(self.host, f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql}))
        if text.startswith("ERROR"):
            raise LabError(f"{promql}: {text}")
        answer = json.loads(text)
        if answer.get("status") != "success":
            raise LabError(f"{promql}: {answer}")
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result

    def label_values(self, label: str) -> list[str]:
        text = http_get(self.host, f"{self.url}/api/v1/label/{label}/values")
        answer = json.loads(text) if not text.startswith("ERROR") else {}
        if answer.get("status") != "success":
            raise LabError(f"label values of {label}: {text[:500]}")
        values: list[str] = answer["data"]
        return values

    def value(self, promql: str) -> float | None:
        """The single value of an instant query, or None when the vector is empty."""
        result = self.query(promql)
        if not result:
            return None
        if len(result) != 1:
            raise LabError(f"{promql}: {len(result)} series, expected one: {result}")
        return float(result[0]["value"][1])

    def wait_value(self, promql: str, pred: Any, timeout: float = 20) -> float | None:
        """Poll ``promql`` until ``pred(value)`` holds; the last value either way."""
        deadline = time.monotonic() + timeout
        while True:
            got = self.value(promql)
            if got is not None and pred(got) or time.monotonic() >= deadline:
                return got
            time.sleep(0.5)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=20)


class NodeExporter:
    """``prometheus-node-exporter`` in ``host`` with only its textfile collector, on ``directory``."""

    def __init__(self, host: Host, directory: Path, log: Path, port: int = 9100) -> None:
        self.host = host
        self.url = f"http://127.0.0.1:{port}/metrics"
        self.log = log
        self.argv = [need("prometheus-node-exporter"), "--collector.disable-defaults", "--collector.textfile",
                     f"--collector.textfile.directory={directory}", f"--web.listen-address=127.0.0.1:{port}"]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20) -> NodeExporter:
        with open(self.log, "wb") as fh:
            self.proc = self.host.popen(self.argv, stdout=fh, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise LabError(f"node_exporter exited {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            if not http_get(self.host, self.url).startswith("ERROR"):
                return self
            time.sleep(0.2)
        raise LabError(f"node_exporter not ready: {self.log.read_text()[-2000:]}")

    def scrape(self) -> str:
        return http_get(self.host, self.url)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=20)


def sample(exposition: str, name: str, **labels: str) -> float | None:
    """The value of one series in a text exposition (labels must match those given, others are ignored)."""
    from prometheus_client.parser import text_string_to_metric_families

    for fam in text_string_to_metric_families(exposition):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return None


def total(exposition: str, name: str) -> float:
    """The sum of every series of ``name`` in a text exposition."""
    from prometheus_client.parser import text_string_to_metric_families

    return sum(float(s.value) for fam in text_string_to_metric_families(exposition) for s in fam.samples
               if s.name == name)


# --- the Grafana dashboard's queries (grafana/portsentinel-dashboard.json) --------------------------------------

DASHBOARD = Path(__file__).resolve().parents[2] / "grafana" / "portsentinel-dashboard.json"
#: Grafana's variables, replaced by durations Prometheus parses.
GRAFANA_VARS = {"$__rate_interval": "1m", "$__range": "1h", "$__interval": "15s"}
_KEYWORDS = frozenset(("by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset", "and",
                       "or", "unless", "inf", "nan"))


def dashboard_queries(path: Path = DASHBOARD) -> list[tuple[str, str]]:
    """(panel title, PromQL expression) for every target of every panel, Grafana variables replaced."""
    dash = json.loads(path.read_text())
    out = []
    for panel in dash["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for var, value in GRAFANA_VARS.items():
                expr = expr.replace(var, value)
            out.append((panel["title"], expr))
    return out


def promql_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (a small extractor: strings, label matchers, grouping
    clauses and ranges removed; identifiers before '(' are functions or aggregations)."""
    import re

    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        word = m.group(0)
        if word.lower() in _KEYWORDS or re.match(r"\s*\(", text[m.end():]):
            continue
        if m.start() > 0 and (text[m.start() - 1].isdigit() or text[m.start() - 1] == "."):
            continue  # the exponent or unit of a number (1e3)
        names.add(word)
    return names


def family(name: str) -> str:
    """A histogram's series name → its family name (the others unchanged)."""
    for suffix in ("_bucket", "_count", "_sum"):
        if name.endswith(suffix) and not name.endswith("_total"):
            return name[: -len(suffix)]
    return name
