"""portsentinel-fleet with the credentials `portsentinel fleet setup` makes: TLS verified against the fleet's CA,
one nkey per host, the servers' per-host permissions, the bucket made with the admin seed. The daemons' whole
path (puts, deletes, the watch's consumer, flow control, its health check, the stream's info) works within a
host's permissions; a daemon whose name does not match its credential has its puts refused, reported and
dropped (never retried for ever), and cannot watch either."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from portsentinel.client.cli import main as portsentinel
from tests.lab.fleetd import Daemon
from tests.lab.nats import NatsLab, nats_lab, nats_problem

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[NatsLab, Path]]:
    problem = nats_problem()
    if problem:
        pytest.fail(f"NATS lab unavailable: {problem}")
    out = tmp_path_factory.mktemp("fleet-setup")

    def prepare(lab: NatsLab) -> dict[str, Path]:
        servers = ",".join(f"{s.name}={s.host.addr4}" for s in lab.servers)
        assert portsentinel(["fleet", "setup", "--hosts", "a,b,c", "--servers", servers, "--out", str(out),
                             "--server-dir", f"{out}/servers/{{name}}", "--host-dir", f"{out}/hosts/{{name}}",
                             "--store-dir", f"{lab.workdir}/{{name}}/store"]) == 0
        return {s.name: out / "servers" / s.name / "nats-server.conf" for s in lab.servers}

    script = str(Path(sys.executable).parent / "portsentinel")
    with nats_lab(("a", "b", "c", "adm"), prepare=prepare, scheme="tls") as lab:
        lab.run("adm", [script, "fleet", "setup", "--create-bucket", "--out", str(out)], timeout=90)
        yield lab, out


def creds(out: Path, host: str) -> dict[str, str]:
    return {"nkey_seed": str(out / "hosts" / host / f"{host}.nk"), "ca": str(out / "ca.pem")}


def _refusal(key: str) -> bool:
    """A `failed` record of the fleet daemon naming ``key`` as refused by the cluster."""
    out = subprocess.run(["journalctl", "-o", "json", "--no-pager", "SYSLOG_IDENTIFIER=portsentinel-fleet",
                          "PS_EVENT=failed"], capture_output=True, text=True, timeout=30).stdout
    return any(key in r["MESSAGE"] and "refused" in r["MESSAGE"]
               for r in (json.loads(line) for line in out.splitlines() if line.strip()))


def test_daemons_within_their_permissions(secured: tuple[NatsLab, Path], tmp_path: Path) -> None:
    lab, out = secured
    assert all(url.startswith("tls://") for url in lab.urls())
    work = tmp_path
    a = Daemon(lab, "a", work, **creds(out, "a")).start()
    b = Daemon(lab, "b", work, **creds(out, "b")).start()
    # c's daemon calls itself "a": its puts land outside its permissions
    liar = Daemon(lab, "c", work, name="a", **creds(out, "c")).start()
    try:
        a.decide("ban", "203.0.113.7")
        b.wait(lambda: b.banned().get("203.0.113.7") == "a", 20, "a's ban on b over TLS with nkeys")
        a.wait(lambda: a.status()["connected"] and a.status()["spool"] == 0, 10, "a's spool drained")
        a.decide("unban", "203.0.113.7")
        b.wait(lambda: any(x["PS_EVENT"] == "unban" for x in b.lines()), 20, "a's unban on b")
        liar.wait(lambda: liar.status()["connected"], 20, "c connected")
        liar.decide("ban", "203.0.113.9")
        liar.wait(lambda: _refusal("a.portsentinel.203-0-113-9"), 20, "the refused put reported")
        assert liar.status()["spool"] == 0  # dropped, not retried for ever
        assert "203.0.113.9" not in b.banned()
        # nor may it watch: its inbox prefix (_INBOX_a) is not its credential's, so no reply reaches it
        assert liar.status()["watcher"] == "stopped" and liar.lines() == []
    finally:
        for d in (a, b, liar):
            d.stop()
