"""portsentinel.fleet.config: fleet.conf < fleet.local, typed values, file:line: key errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from portsentinel.fleet.config import ConfigError, FleetConfig, load

ROOT = Path(__file__).resolve().parents[3]


def test_shipped_default_loads_disabled(tmp_path: Path) -> None:
    cfg = load(str(ROOT / "fleet.conf"))
    assert cfg == FleetConfig(servers=cfg.servers, nkey_seed="/etc/portsentinel/fleet/.nk",
                              ca="/etc/portsentinel/fleet/ca.pem", sources=cfg.sources)
    assert not cfg.enabled and len(cfg.servers) == 3 and cfg.origins is None


def test_local_overrides_and_interpolation(tmp_path: Path) -> None:
    (tmp_path / "fleet.conf").write_text((ROOT / "fleet.conf").read_text())
    (tmp_path / "fleet.local").write_text("[fleet]\nenabled = yes\nhost = web-1\norigins = web-2, web-3 # two\n"
                                          "heartbeat = 2s\nservers = nats://10.0.0.1:4222\n  tls://[2001:db8::1]:4222\n"
                                          "[other]\nignored = 1\n")
    cfg = load(str(tmp_path / "fleet.conf"))
    assert cfg.enabled and cfg.host == "web-1" and cfg.nkey_seed == "/etc/portsentinel/fleet/web-1.nk"
    assert cfg.origins == frozenset({"web-2", "web-3"}) and cfg.trusts("web-2") and not cfg.trusts("web-9")
    assert cfg.heartbeat == 2.0 and cfg.servers == ("nats://10.0.0.1:4222", "tls://[2001:db8::1]:4222")
    assert cfg.may_unban("web-3") and not cfg.may_unban("web-9")


def test_errors_name_file_line_and_key(tmp_path: Path) -> None:
    conf = tmp_path / "fleet.conf"
    conf.write_text("[fleet]\nenabled = maybe\nhost = bad host\nservers = http://x\norigin_rate = -1\n"
                    "colour = blue\nnkey_seed = relative\nstate = %(nowhere)s\nthis is not ini\n")
    with pytest.raises(ConfigError) as err:
        load(str(conf))
    assert err.value.errors == [f"{conf}:9: expected 'key = value', not 'this is not ini'"]
    conf.write_text(conf.read_text().replace("this is not ini\n", ""))
    with pytest.raises(ConfigError) as err:
        load(str(conf))
    text = "\n".join(err.value.errors)
    for line, key in ((2, "enabled"), (3, "host"), (4, "servers"), (5, "origin_rate"), (6, "colour"),
                      (7, "nkey_seed"), (8, "state")):
        assert f"{conf}:{line}: {key}: " in text
    with pytest.raises(ConfigError, match="no such file"):
        load(str(tmp_path / "missing.conf"))


def test_enabled_needs_host_servers_and_key(tmp_path: Path) -> None:
    conf = tmp_path / "fleet.conf"
    conf.write_text("[fleet]\nenabled = true\n")
    with pytest.raises(ConfigError, match="host: required when enabled"):
        load(str(conf))
