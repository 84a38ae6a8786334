"""jail.conf's fleet keys: ``share``, ``bantime.fleetmultipliers``, ``logowner``, and the shipped [fleet] jail."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from portsentinel.responder.config.jailconf import JailConfig, load, parse_multipliers
from tests.conftest import ROOT


def _load(tmp_path: Path, text: str) -> tuple[list[str], dict[str, JailConfig]]:
    (tmp_path / "jail.conf").write_text(text)
    cfg = load(tmp_path)
    return cfg.errors, {j.name: j for j in cfg.jails}


def test_share_defaults_to_false_and_is_per_jail(tmp_path: Path) -> None:
    errors, jails = _load(tmp_path, "[a]\nenabled = true\nfilter = portsentinel\nshare = yes\n\n"
                                    "[b]\nenabled = true\nfilter = portsentinel\n")
    assert errors == []
    assert jails["a"].share is True and jails["b"].share is False


def test_share_is_refused_on_the_fleet_jail_with_file_and_line(tmp_path: Path) -> None:
    errors, jails = _load(tmp_path, "[ok]\nenabled = true\nfilter = portsentinel\n\n"
                                    "[fleet]\nenabled = false\nfilter = portsentinel-fleet\n\nshare = true\n")
    assert list(jails) == ["ok"]
    (err,) = errors
    assert err.startswith(f"{tmp_path}/jail.conf:9: [fleet] share:") and "never shares" in err


def test_share_must_be_a_boolean(tmp_path: Path) -> None:
    errors, _ = _load(tmp_path, "[a]\nenabled = true\nfilter = portsentinel\nshare = maybe\n")
    assert len(errors) == 1 and f"{tmp_path}/jail.conf:4: [a] share:" in errors[0]


@pytest.mark.parametrize("text,value", [("1 2 4", (1.0, 2.0, 4.0)), ("1, 1.5", (1.0, 1.5)), ("0.5", (0.5,))])
def test_multipliers(text: str, value: tuple[float, ...]) -> None:
    assert parse_multipliers(text) == value


@pytest.mark.parametrize("text", ["", "1 two", "0", "-1", "nan", "inf", "1001", " ".join(["1"] * 65)])
def test_bad_multipliers_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_multipliers(text)


def test_bad_multipliers_name_file_and_line(tmp_path: Path) -> None:
    errors, _ = _load(tmp_path, "[fleet]\nenabled = true\nfilter = portsentinel-fleet\n"
                                "bantime.fleetmultipliers = 1 x\n")
    assert len(errors) == 1 and f"{tmp_path}/jail.conf:4: [fleet] bantime.fleetmultipliers:" in errors[0]


def test_logowner_only_where_the_jail_is_enabled(tmp_path: Path) -> None:
    text = "[fleet]\nenabled = {}\nfilter = portsentinel-fleet\nlogowner = no-such-user-here\n"
    errors, _ = _load(tmp_path, text.format("false"))
    assert errors == []  # a disabled fleet jail does not need the fleet's user to exist
    errors, _ = _load(tmp_path, text.format("true"))
    assert len(errors) == 1 and f"{tmp_path}/jail.conf:4: [fleet] logowner: no such user" in errors[0]
    errors, jails = _load(tmp_path, text.replace("no-such-user-here", str(os.geteuid() + 7)).format("true"))
    assert errors == [] and jails["fleet"].file_owner == os.geteuid() + 7


def test_the_fleet_jail_reads_json_lines_only(tmp_path: Path) -> None:
    errors, _ = _load(tmp_path, "[fleet]\nenabled = true\nfilter = portsentinel-fleet\n"
                                "logpath = /var/log/fleet.log\n")
    assert len(errors) == 1 and f"{tmp_path}/jail.conf:4: [fleet] logpath:" in errors[0]


def test_the_shipped_fleet_jail(tmp_path: Path) -> None:
    """Disabled by default, and enabled through a .local it loads (the fleet's user stands in as a uid)."""
    cfg = load(ROOT)
    assert "fleet" in cfg.disabled and cfg.errors == []
    (tmp_path / "jail.conf").write_text((ROOT / "jail.conf").read_text())
    (tmp_path / "jail.local").write_text(f"[fleet]\nenabled = true\nlogowner = {os.geteuid()}\n")
    cfg = load(tmp_path)
    (fleet,) = [j for j in cfg.jails if j.name == "fleet"]
    assert fleet.fleet and not fleet.share and fleet.maxbans_per_minute == 0
    assert fleet.bantime_fleetmultipliers == (1.0, 2.0, 4.0) and fleet.bantime_maxtime == 86400
    assert fleet.logpath == "/var/lib/portsentinel-fleet/remote.jsonl"
    assert [(a.name, a.args) for a in fleet.actions] == [("nftables", {"name": "fleet"})]
