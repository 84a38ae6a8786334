"""`portsentinel fleet setup`: its command line (the files themselves: tests/unit/fleet/test_setup.py; the bucket
on a real cluster: tests/integration/test_fleet_security.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from portsentinel.client.cli import main


def test_setup_writes_the_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "f"
    assert main(["fleet", "setup", "--hosts", "web1,web2", "--servers", "s1=192.0.2.1", "--out", str(out)]) == 0
    assert "2 host(s), 1 server(s), bucket portsentinel_bans" in capsys.readouterr().out
    assert (out / "hosts/web2/web2.nk").stat().st_mode & 0o777 == 0o600
    assert (out / "servers/s1/nats-server.conf").exists()


@pytest.mark.parametrize(("argv", "message"), [
    (["--hosts", "a,b!"], "--hosts needs --servers"),
    (["--hosts", "a,b!", "--servers", "s1=192.0.2.1"], "--hosts: host 2 'b!' is not a host name"),
    (["--hosts", "a", "--servers", "s1=host.example"], "--servers: server 's1': 'host.example' is not an IPv4"),
    (["--hosts", "a", "--servers", "s1=192.0.2.1", "--bucket", "x.y"], "--bucket: 'x.y'"),
    ([], "give --hosts and --servers"),
    (["--create-bucket"], "setup.json: missing"),
])
def test_setup_errors_name_the_argument(tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str],
                                        message: str) -> None:
    assert main(["fleet", "setup", "--out", str(tmp_path / "f"), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("portsentinel fleet setup: ") and message in err


def test_create_bucket_checks_replicas_and_max_age_before_connecting(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "f"
    assert main(["fleet", "setup", "--hosts", "a", "--servers", "s1=192.0.2.1", "--out", str(out)]) == 0
    assert main(["fleet", "setup", "--out", str(out), "--create-bucket", "--replicas", "3"]) == 2
    assert "--replicas 3: 1 to the number of servers (1)" in capsys.readouterr().err
    assert main(["fleet", "setup", "--out", str(out), "--create-bucket", "--max-age", "soon"]) == 2
    assert "--max-age:" in capsys.readouterr().err
