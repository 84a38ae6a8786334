"""responder.records: ban records held to the end of the turn and, many at once, aggregated into one journal
entry per batch with PS_SRC repeated (read back from the private journald); JSON lines keep one line per ban."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from portsentinel import record as R
from portsentinel.responder.adapters.decisions import DecisionLog
from portsentinel.responder.adapters.rearm import RearmSender
from portsentinel.responder.metrics import ResponderMetrics
from portsentinel.responder.records import AGGREGATE_MAX, AGGREGATE_MIN, Reporter
from tests.journal import entries, new_tag

_OPEN: list[Reporter] = []


@pytest.fixture(autouse=True)
def _close() -> Iterator[None]:
    yield
    while _OPEN:
        rep = _OPEN.pop()
        rep.rearm.close()
        rep.decisions.close()


def _reporter(tmp_path: Path, journal: bool) -> Reporter:
    rep = Reporter(DecisionLog(str(tmp_path / "d.jsonl"), use_journal=journal), RearmSender(str(tmp_path / "r")),
                   ResponderMetrics())
    _OPEN.append(rep)
    return rep


def _ban(rep: Reporter, ip: str, tag: str, bantime: str = "600", **extra: str) -> None:
    rep.report(R.Event.BAN, f"jail bulk: banned {ip}", PS_JAIL="bulk", PS_SRC=ip, PS_ACTION="nftables",
               PS_BANTIME=bantime, PS_SCAN="syn", PS_TEST=tag, **extra)


def _addresses(n: int, third: int = 7) -> list[str]:
    return [f"198.51.{third + i // 250}.{1 + i % 250}" for i in range(n)]


def test_many_bans_are_aggregated_and_every_address_is_found(journald: str, tmp_path: Path) -> None:
    tag = new_tag()
    rep = _reporter(tmp_path, journal=True)
    ips = _addresses(AGGREGATE_MAX + 44)  # two entries: 256 and 44 addresses
    for i, ip in enumerate(ips):
        _ban(rep, ip, tag, bantime=str(600 - (i % 3)))  # bantimes differ: summarised, not repeated
    rep.turn_done()
    got = entries(tag, 2)
    assert len(got) == 2 and rep.aggregated == 2
    srcs = [s for e in got for s in (e["PS_SRC"] if isinstance(e["PS_SRC"], list) else [e["PS_SRC"]])]
    assert sorted(srcs) == sorted(ips)  # every address once, none lost
    assert sorted(int(e["PS_BATCH"]) for e in got) == [44, AGGREGATE_MAX]
    for e in got:
        assert e["PS_EVENT"] == "ban" and e["PS_JAIL"] == "bulk" and e["PS_SCAN"] == "syn"
        assert "PS_BANTIME" not in e and "PS_BANTIME 598..600" in e["MESSAGE"]
    # journalctl PS_SRC=ADDR finds the entry by any of its addresses
    out = subprocess.run(["journalctl", "--no-pager", "-o", "json", f"PS_TEST={tag}", f"PS_SRC={ips[-1]}"],
                         capture_output=True, text=True, timeout=30, check=True).stdout.splitlines()
    assert len(out) == 1 and ips[-1] in json.loads(out[0])["PS_SRC"]


def test_few_bans_and_other_records_keep_their_own_entries_in_order(journald: str, tmp_path: Path) -> None:
    tag = new_tag()
    rep = _reporter(tmp_path, journal=True)
    ips = _addresses(AGGREGATE_MIN - 1, third=20)
    for ip in ips:
        _ban(rep, ip, tag)
    rep.report(R.Event.UNBAN, "jail bulk: unbanned one", PS_JAIL="bulk", PS_SRC=ips[0], PS_TEST=tag,
               PS_DETAIL="manual")
    got = entries(tag, len(ips) + 1)
    assert [e["PS_SRC"] for e in got] == [*ips, ips[0]]  # the held bans went first: order kept
    assert all("PS_BATCH" not in e and e["PS_BANTIME"] == "600" for e in got[:-1])
    assert rep.aggregated == 0


def test_shared_and_network_bans_are_never_aggregated(journald: str, tmp_path: Path) -> None:
    tag = new_tag()
    rep = _reporter(tmp_path, journal=True)
    ips = _addresses(AGGREGATE_MIN * 2, third=30)
    for ip in ips:
        _ban(rep, ip, tag, PS_SHARE="1")  # the fleet daemon reads one address per shared decision
    rep.turn_done()
    got = entries(tag, len(ips))
    assert sorted(e["PS_SRC"] for e in got) == sorted(ips) and rep.aggregated == 0


def test_json_lines_get_one_line_per_ban(tmp_path: Path) -> None:
    rep = _reporter(tmp_path, journal=False)
    ips = _addresses(AGGREGATE_MIN * 4, third=40)
    for ip in ips:
        _ban(rep, ip, "x")
    rep.turn_done()
    lines = [json.loads(line) for line in (tmp_path / "d.jsonl").read_text().splitlines()]
    assert [rec["PS_SRC"] for rec in lines] == ips and rep.aggregated == 0
    assert rep.metrics.bans["bulk"] == len(ips)


def test_network_bans_of_their_own_address_are_aggregated_apart(journald: str, tmp_path: Path) -> None:
    tag = new_tag()
    rep = _reporter(tmp_path, journal=True)
    nets = [f"2001:db8:{i:x}::/64" for i in range(1, AGGREGATE_MIN + 11)]
    for net in nets:  # a fleet catch-up of /64 bans: PS_SRC is each network's own address
        rep.report(R.Event.BAN, f"jail fleet: banned {net}", PS_JAIL="fleet", PS_SRC=net, PS_ACTION="nftables",
                   PS_BANTIME="600", PS_TEST=tag)
    ips = _addresses(AGGREGATE_MIN, third=60)
    for ip in ips:
        _ban(rep, ip, tag)
    rep.report(R.Event.BAN, "jail fleet: banned 2001:db8:ff::/64 (record from 2001:db8:ff::9)", PS_JAIL="fleet",
               PS_SRC="2001:db8:ff::9", PS_SRC_NET="2001:db8:ff::/64", PS_ACTION="nftables", PS_TEST=tag)
    rep.turn_done()
    got = entries(tag, 3)
    assert len(got) == 3 and rep.aggregated == 2
    (networks,) = [e for e in got if isinstance(e.get("PS_SRC_NET"), list)]
    assert sorted(networks["PS_SRC_NET"]) == sorted(nets) and networks["PS_BATCH"] == str(len(nets))
    assert sorted(networks["PS_SRC"]) == sorted(n.partition("/")[0] for n in nets)
    (own,) = [e for e in got if e.get("PS_SRC_NET") == "2001:db8:ff::/64"]
    assert own["PS_SRC"] == "2001:db8:ff::9" and "PS_BATCH" not in own  # which address made it stays told


def test_a_catch_up_of_network_bans_is_aggregated_within_journalds_fields_per_entry(journald: str,
                                                                                   tmp_path: Path) -> None:
    """256 network bans in one entry were 530 fields: more iovecs than one message may have (sendv: EINVAL), and
    every ban of a /64 catch-up was then written on its own."""
    tag = new_tag()
    rep = _reporter(tmp_path, journal=True)
    nets = [R.canonical_network(f"2001:db8:{i // 65536:x}:{i % 65536:x}::/64") for i in range(AGGREGATE_MAX + 10)]
    rep.report_bans([(f"jail fleet: banned {net}", {"PS_JAIL": "fleet", "PS_SRC": net.partition("/")[0],
                                                    "PS_SRC_NET": net, "PS_ACTION": "nftables",
                                                    "PS_BANTIME": "600", "PS_TEST": tag}) for net in nets])
    rep.turn_done()
    got = entries(tag, 3)
    assert rep.aggregated == 3 and len(got) == 3  # 128 + 128 + 10
    assert sorted(n for e in got for n in e["PS_SRC_NET"]) == sorted(nets)


def _journal_by_jail(jail: str, want: int) -> list[dict[str, str]]:
    import time

    deadline = time.monotonic() + 10
    while True:
        out = subprocess.run(["journalctl", "--no-pager", "-o", "json", f"PS_JAIL={jail}"], capture_output=True,
                             text=True, timeout=30, check=True).stdout.splitlines()
        if len(out) >= want or time.monotonic() > deadline:
            return [json.loads(line) for line in out]
        time.sleep(0.05)


def test_bulk_ban_records_get_their_message_only_when_written_on_their_own(journald: str, tmp_path: Path) -> None:
    """report_applied (the bulk path) leaves a held record's MESSAGE to the moment it is written on its own: a few
    bans, and the one ban of a batch whose fields differ from the others', each have their full message; an
    aggregated entry has its own."""
    from portsentinel.responder.core.bans import Ban

    jail = f"t{new_tag()[:12]}"
    rep = _reporter(tmp_path, journal=True)
    few = [Ban(jail, ip, 1000.0, 1600.0, 2, 1, {"port": "22", "scan": "syn"}) for ip in _addresses(3, third=40)]
    rep.report_applied([(b, ["nftables"]) for b in few])
    rep.turn_done()
    many = [Ban(jail, ip, 1000.0, 1600.0, 1, 1, {"scan": "syn"}) for ip in _addresses(40, third=50)]
    many.append(Ban(jail, "203.0.113.9", 1000.0, 1600.0, 1, 1, {"scan": "fin"}))  # alone in its group
    rep.report_applied([(b, ["nftables"]) for b in many])
    rep.turn_done()
    got = _journal_by_jail(jail, 5)
    assert len(got) == 5 and rep.aggregated == 1
    single = [e for e in got if "PS_BATCH" not in e]
    assert [e["MESSAGE"] for e in single] == [
        *(f"jail {jail}: banned {b.ip} for 600s (offence 2, 1 failure(s)) by nftables" for b in few),
        f"jail {jail}: banned 203.0.113.9 for 600s (offence 1, 1 failure(s)) by nftables"]
    (batch,) = [e for e in got if "PS_BATCH" in e]
    assert batch["PS_BATCH"] == "40" and batch["MESSAGE"].startswith(f"jail {jail}: banned 40 addresses for 600s")
    assert not rep._later  # noqa: SLF001 - nothing left behind for a later record
