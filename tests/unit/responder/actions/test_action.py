"""actions.py: loading actions.d files, [Init] overridden by the jail, errors with file:line:key."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from portsentinel.responder.actions.action import ActionError, load_action
from portsentinel.responder.actions.variables import VarError
from portsentinel.responder.adapters.nftbatch import NftBatch
from portsentinel.responder.adapters.runner import Result
from tests.conftest import ROOT
from tests.unit.responder.actions.plans import argv, set_name

SHIPPED = ROOT / "actions.d"
BAN = {"ip": "198.51.100.7", "bantime": 600, "port": 22, "proto": "tcp", "scan": "syn", "mode": "stcp",
       "failures": 3, "time": 1_700_000_000, "matches": "line one\nline two"}


@pytest.mark.parametrize("conf", sorted(SHIPPED.glob("*.conf")), ids=lambda p: p.stem)
def test_every_shipped_action_loads_and_renders(conf: Path) -> None:
    action = load_action(SHIPPED, conf.stem, "ssh")
    for phase in ("actionstart", "actionstop", "actioncheck", "actionflush"):
        argv(action, phase)
    for ip in ("198.51.100.7", "2001:db8::7"):
        for phase in ("actionban", "actionunban"):
            for words in argv(action, phase, {**BAN, "ip": ip}):
                assert all(isinstance(a, str) for a in words)


def test_jail_arguments_override_init_and_port_becomes_ports() -> None:
    a = load_action(SHIPPED, 'nftables[name=web, port="80,443", blocktype=reject]', "webjail")
    assert a.params["name"] == "web" and a.params["jail"] == "webjail"
    start = argv(a, "actionstart")
    assert ["nft", "add rule inet portsentinel web ip saddr @web_v4 meta l4proto { tcp, udp } "
                   "th dport { 80,443 } reject"] in start
    assert argv(a, "actionban", {"ip": "2001:db8::1", "bantime": -1}) == [
        ["nft", "add", "element", "inet", "portsentinel", "web_v6", "{ 2001:db8::1 }"]]
    assert set_name(a, {"ip": "10.1.2.3"}) == "web_v4"


def test_families_and_script_order() -> None:
    v6 = load_action(SHIPPED, "ip6tables", "ssh")
    assert argv(v6, "actionban", BAN) == [] and v6.families == {"inet6"}
    assert load_action(SHIPPED, "script[first=yes]", "ssh").order < 0 < load_action(SHIPPED, "script", "ssh").order
    s = load_action(SHIPPED, 'script[command="/opt/x --ip $TARGET$ $PORT$"]', "ssh")
    assert argv(s, "actionban", BAN) == [["@script", "/opt/x", "--ip", "198.51.100.7", "22"]]


def test_route_gateway() -> None:
    a = load_action(SHIPPED, "route[gateway=192.0.2.1]", "ssh")
    assert argv(a, "actionban", BAN) == [["ip", "-4", "route", "replace", "198.51.100.7/32", "via", "192.0.2.1"]]
    assert argv(load_action(SHIPPED, "route", "ssh"), "actionunban", BAN) == [  # idempotent: in place, then gone
        ["ip", "-4", "route", "replace", "blackhole", "198.51.100.7/32"],
        ["ip", "-4", "route", "del", "blackhole", "198.51.100.7/32"]]


def test_hostile_ban_values_refused() -> None:
    a = load_action(SHIPPED, "iptables", "ssh")
    for ip in ("1.2.3.4; rm -rf /", "$(reboot)", "evil.example.com"):
        with pytest.raises(VarError, match="ip"):
            argv(a, "actionban", {**BAN, "ip": ip})
    with pytest.raises(VarError, match="not a ban-time"):
        argv(a, "actionban", {**BAN, "name": "x"})
    with pytest.raises(ActionError, match="name"):
        load_action(SHIPPED, "iptables[name=-rf]", "ssh")


def _write(d: Path, name: str, text: str) -> None:
    (d / f"{name}.conf").write_text(text)


def test_errors_name_file_line_key(tmp_path: Path) -> None:
    with pytest.raises(ActionError, match="unknown action 'nope'"):
        load_action(tmp_path, "nope", "j")
    with pytest.raises(ActionError, match="bad action name"):
        load_action(tmp_path, "../etc/passwd", "j")
    _write(tmp_path, "a", "[Definition]\nactionban = echo {{ ip }}\n")
    with pytest.raises(ActionError, match="actionunban: missing"):
        load_action(tmp_path, "a", "j")
    _write(tmp_path, "b", "[Definition]\nactionunban =\nactionban = echo ok\n  echo {% if %}\n")
    with pytest.raises(ActionError, match=r"b\.conf:4: actionban: TemplateSyntaxError"):
        load_action(tmp_path, "b", "j")
    _write(tmp_path, "c", "[Definition]\nactionunban =\nactionstart = echo {{ ip }}\nactionban = echo {{ ip }}\n")
    with pytest.raises(ActionError, match=r"c\.conf:3: actionstart: undefined variable ip"):
        load_action(tmp_path, "c", "j")
    _write(tmp_path, "d", "[Definition]\nactionunban =\nactionban = echo {{ tpyo }}\n")
    with pytest.raises(ActionError, match=r"d\.conf:3: actionban: undefined variable tpyo"):
        load_action(tmp_path, "d", "j")


def test_local_overrides_and_percent_references(tmp_path: Path) -> None:
    _write(tmp_path, "x", "[Definition]\n_c = echo\nactionunban =\nactionban = %(_c)s {{ msg }} 100%%\n"
                          "[Init]\nmsg = hi\n")
    (tmp_path / "x.local").write_text("[Init]\nmsg = from-local\n")
    assert argv(load_action(tmp_path, "x", "j"), "actionban", {"ip": "1.2.3.4"}) == [["echo", "from-local", "100%"]]


class FakeRunner:
    def __init__(self, fail_first: bool = False) -> None:
        self.calls: list[tuple[list[str], str | None]] = []
        self.fail_first = fail_first

    def run(self, argv: Sequence[str], *, input: str | None = None, timeout: float | None = None) -> Result:
        self.calls.append((list(argv), input))
        bad = (self.fail_first and len(self.calls) == 1) or (input is not None and "10.0.0.9" in input)
        return Result(tuple(argv), 1 if bad else 0, stderr="boom" if bad else "")


def test_nftbatch_dedups_keeps_longest_and_falls_back() -> None:
    r = FakeRunner()
    b = NftBatch(r)
    b.add("s_v4", "10.0.0.1", 60)
    b.add("s_v4", "10.0.0.1", 600)
    b.add("s_v4", "10.0.0.1", 30)
    b.add("s_v6", "2001:db8::1", None)
    b.delete("s_v4", "10.0.0.2")
    res = b.commit()
    assert res.ok and res.runs == 1 and res.applied == 3 and len(b) == 0
    script = r.calls[0][1]
    assert script == ("add element inet portsentinel s_v4 { 10.0.0.1 timeout 600s, 10.0.0.2 }\n"
                      "add element inet portsentinel s_v6 { 2001:db8::1 }\n"
                      "delete element inet portsentinel s_v4 { 10.0.0.2 }\n")
    assert r.calls[0][0] == ["nft", "-f", "-"]
    r2 = FakeRunner()
    b2 = NftBatch(r2)
    for i in range(1, 10):
        b2.add("s_v4", f"10.0.0.{i}", 60)
    res2 = b2.commit()
    # the batch, then halves: 1-4 at once, 5-6, 7, 8 and 9 alone after their halves failed (9 runs, not 10)
    assert not res2.batched and res2.runs == 9 and res2.applied == 8 and res2.failed == [("10.0.0.9", "boom")]
    with pytest.raises(ValueError):
        b2.add("s_v4 } ; flush ruleset", "10.0.0.1")
    with pytest.raises(ValueError):
        b2.add("s_v4", "10.0.0.1 } ; flush ruleset")


def test_nftbatch_bulk_elements_as_given_then_by_halves_and_never_unchecked() -> None:
    r = FakeRunner()
    b = NftBatch(r)
    b.add_stored_many("s_v4", ["10.0.0.1", "10.0.0.2"], [60, None])
    b.add_stored_many("s_v6net", ["2001:db8::/64"], [0])
    assert len(b) == 3 and b.commit().applied == 3 and len(b) == 0
    assert r.calls[0][1] == ("add element inet portsentinel s_v4 { 10.0.0.1 timeout 60s, 10.0.0.2 }\n"
                             "add element inet portsentinel s_v6net { 2001:db8::/64 timeout 1s }\n")
    r2 = FakeRunner()
    b2 = NftBatch(r2)
    b2.add_stored_many("s_v4", [f"10.0.0.{i}" for i in range(1, 10)], [60] * 9)
    res = b2.commit()  # the bulk text refused: the elements go by halves as ordinary adds
    assert not res.batched and res.applied == 8 and res.failed == [("10.0.0.9", "boom")]
    b3 = NftBatch(FakeRunner())
    with pytest.raises(ValueError):  # text that is not an address is parsed one by one, and refused
        b3.add_stored_many("s_v4", ["10.0.0.1", "10.0.0.1 } ; flush ruleset"], [60, 60])
    with pytest.raises(ValueError):
        b3.add_stored_many("s_v4", ["10.0.0.1"], [])


def test_nftables_chain_exempts_loopback_and_own_addresses_before_its_drop_rules() -> None:
    start = [" ".join(words) for words in argv(load_action(SHIPPED, "nftables[name=web]", "webjail"), "actionstart")]
    rules = [s for s in start if s.startswith("nft add rule inet portsentinel web ")]
    assert rules[:2] == ["nft add rule inet portsentinel web iif lo accept",
                         "nft add rule inet portsentinel web fib saddr type local accept"]
    assert [r.rsplit(" ", 1)[1] for r in rules[2:]] == ["drop"] * 4
    assert [r.split()[-2] for r in rules[2:]] == ["@web_v4", "@web_v6", "@web_v4net", "@web_v6net"]


def test_nftables_addresses_in_hash_sets_networks_in_interval_sets() -> None:
    """An address goes to <name>_v4 / _v6 (flags timeout: a hash set), a network (shorter than the family's full
    length) to <name>_v4net / _v6net (flags interval,timeout); ban, unban and the batch agree, and check, flush and
    stop cover all four sets."""
    a = load_action(SHIPPED, "nftables[name=web]", "webjail")
    start = [" ".join(words) for words in argv(a, "actionstart")]
    assert "nft add set inet portsentinel web_v4 { type ipv4_addr; flags timeout; }" in start
    assert "nft add set inet portsentinel web_v6 { type ipv6_addr; flags timeout; }" in start
    assert "nft add set inet portsentinel web_v4net { type ipv4_addr; flags interval,timeout; }" in start
    assert "nft add set inet portsentinel web_v6net { type ipv6_addr; flags interval,timeout; }" in start
    for ip, expected in (("10.1.2.3", "web_v4"), ("10.1.2.0/24", "web_v4net"), ("10.1.2.3/32", "web_v4"),
                         ("2001:db8::1", "web_v6"), ("2001:db8:1:2::/64", "web_v6net"),
                         ("2001:db8::1/128", "web_v6")):
        assert set_name(a, {"ip": ip}) == expected, ip
        (ban,) = argv(a, "actionban", {"ip": ip, "bantime": 60})
        assert ban[5] == expected
        (unban,) = argv(a, "actionunban", {"ip": ip})
        assert unban[1].count(f" {expected} ") == 2
    sets = ["web_v4", "web_v6", "web_v4net", "web_v6net"]
    assert argv(a, "actioncheck") == [["@nft-check", "inet", "portsentinel", "web", *sets]]
    assert [w[-1] for w in argv(a, "actionflush")] == sets
    assert [w[-1] for w in argv(a, "actionstop")] == ["web", *sets]
