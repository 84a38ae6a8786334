"""actions/variables.py and Action.plan: one typed value per ban, validated once, and one plan per phase."""

from __future__ import annotations

import pytest

from portsentinel.responder.actions.action import KERNEL_GRACE, ActionError, SetElement, Steps, load_action
from portsentinel.responder.actions.variables import BanVars, VarError
from portsentinel.responder.core.bans import FOREVER, Ban
from tests.conftest import ROOT

SHIPPED = ROOT / "actions.d"


def _ban(ip: str = "192.0.2.7", **info: str) -> Ban:
    return Ban("ssh", ip, 1000.0, 1600.0, count=2, failures=3,
               info={"port": "22", "proto": "tcp", "scan": "syn", "mode": "stcp", **info},
               matches="attackalert: TCP SYN/Normal scan\x07 from host: 192.0.2.7")


def test_ban_vars_are_validated_once_with_family_mode_and_matches() -> None:
    v = BanVars.of(_ban("::ffff:192.0.2.7"), 1000.0)
    assert (v.ip, v.family, v.port, v.mode, v.bantime, v.failures, v.time) == (
        "192.0.2.7", "inet", 22, "stcp", 600, 3, 1000)
    assert v.matches == "attackalert: TCP SYN/Normal scan? from host: 192.0.2.7"  # control character replaced
    assert BanVars.of(_ban("2001:db8::7"), 1000.0).family == "inet6"
    assert BanVars.of(_ban(), 1300.0, remaining=True).bantime == 300
    assert BanVars.of(Ban("ssh", "2001:db8:1::/48", 0.0, FOREVER), 5.0).context() == {
        "ip": "2001:db8:1::/48", "family": "inet6", "network": True, "bantime": -1, "failures": 1, "time": 0}
    assert not BanVars.of(_ban("2001:db8::7"), 1000.0).network
    assert not BanVars.parse({"ip": "192.0.2.0/32"}).network and BanVars.parse({"ip": "192.0.2.0/31"}).network
    with pytest.raises(VarError, match="network"):
        BanVars.parse({"ip": "192.0.2.7", "network": True})


@pytest.mark.parametrize(("info", "name"), [({"scan": "syn; rm -rf /"}, "scan"), ({"mode": "STCP"}, "mode"),
                                            ({"proto": "-rf"}, "proto")])
def test_hostile_ban_values_are_refused_by_name(info: dict[str, str], name: str) -> None:
    with pytest.raises(VarError) as exc:
        BanVars.of(_ban(**info), 1000.0)
    assert exc.value.name == name


def test_a_corrupt_bantime_is_a_var_error() -> None:
    with pytest.raises(VarError, match="bantime"):
        BanVars.of(Ban("ssh", "192.0.2.7", 0.0, float("inf")), 0.0)


def test_parse_refuses_unknown_names_and_a_family_that_disagrees() -> None:
    with pytest.raises(VarError, match="jail"):
        BanVars.parse({"ip": "192.0.2.7", "jail": "x"})
    with pytest.raises(VarError, match="family"):
        BanVars.parse({"ip": "192.0.2.7", "family": "inet6"})
    with pytest.raises(VarError, match="ip"):
        BanVars.parse({"port": 1})


def test_plan_of_a_set_action_is_a_set_element_outliving_the_ban() -> None:
    a = load_action(SHIPPED, "nftables[name=web]", "webjail")
    p = a.plan("actionban", BanVars.of(_ban(), 1000.0))
    assert p == SetElement("portsentinel", "web_v4", "192.0.2.7", 600 + KERNEL_GRACE)
    forever = a.plan("actionban", BanVars.of(Ban("webjail", "2001:db8::7", 0.0, FOREVER), 0.0))
    assert isinstance(forever, SetElement) and forever.set == "web_v6" and forever.timeout is None
    steps = a.plan("actionban", BanVars.of(_ban(), 1000.0), batch=False)  # the same ban as commands
    assert isinstance(steps, Steps) and steps.steps[0].argv[-1] == "{ 192.0.2.7 timeout 600s }"
    unban = a.plan("actionunban", BanVars.of(_ban(), 1000.0))
    assert isinstance(unban, Steps) and all(s.argv[0] == "nft" for s in unban.steps)


def test_plan_of_commands_fills_mode_and_port_and_skips_other_families() -> None:
    s = load_action(SHIPPED, "script", "ssh")
    (step,) = s.plan("actionban", BanVars.of(_ban(), 1000.0)).steps  # type: ignore[union-attr]
    assert step.argv == ["@script", "/usr/local/sbin/portsentinel-alert", "192.0.2.7", "22", "stcp"]  # $MODE$
    assert load_action(SHIPPED, "ip6tables", "ssh").plan("actionban", BanVars.of(_ban(), 1000.0)) == Steps()


def test_plan_refuses_a_phase_without_its_variables() -> None:
    a = load_action(SHIPPED, "route", "ssh")
    with pytest.raises(ActionError, match="needs the ban"):
        a.plan("actionban")
    with pytest.raises(ActionError, match="takes no ban"):
        a.plan("actionstart", BanVars.of(_ban(), 1000.0))
    with pytest.raises(ValueError, match="unknown phase"):
        a.plan("actionreboot")
