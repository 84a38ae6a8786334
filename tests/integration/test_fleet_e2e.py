"""The whole fleet, end to end (issue 13): five hosts, each a network namespace with a journald of its own and
running a real detector, responder and portsentinel-fleet (per-host nkeys and TLS made by `portsentinel fleet
setup`), a three-server JetStream cluster, and a scanner; all on one bridge, no default route.

A real nmap scan of one host bans the scanner in every host's kernel (its own nft sets, read in its namespace);
a host that joins late catches up; `portsentinel unban --fleet` on one host lifts the ban everywhere; a short ban
ends everywhere; a host refuses a remote ban of an address it protects (on its never-ban list; its own address,
forged by the scanner) and records it; `journalctl PS_SRC=ADDR`
on a receiving host shows the remote ban and its origin. The tests run in order on one module-scoped site and
use a fresh scanner address each.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.lab.detector import nmap, python_in
from tests.lab.fleethost import FleetHost, FleetSite, fleet_site, wait_until
from tests.lab.nats import nats_problem

pytestmark = pytest.mark.lab

HOSTS = ("a", "b", "c", "d", "e")
SHORT = 6  # host c's bantime (seconds): its bans end while the test watches


class Site:
    def __init__(self, site: FleetSite, protected: str) -> None:
        self.site = site
        self.protected = protected  # on host d's never-ban list (ignoreip)
        self.h: dict[str, FleetHost] = site.hosts

    def scan(self, target: str, source: str) -> None:
        """One bounded SYN scan of two watched ports of ``target`` from the scanner's address ``source``."""
        nmap(self.site.scanner, "-sS", self.h[target].machine.addr4, "1,11", source=source,
             extra=["-T5", "--max-rtt-timeout", "200ms"], timeout=60)

    def banned_on(self, addr: str, origin: str, hosts: tuple[str, ...] = HOSTS) -> dict[str, bool]:
        """host -> whether ``addr`` is in force in its kernel: the origin's own jail set, the others' fleet set."""
        return {n: self.h[n].banned(addr, local=n == origin) for n in hosts}

    def wait_banned(self, addr: str, origin: str, hosts: tuple[str, ...] = HOSTS, timeout: float = 30) -> None:
        wait_until(lambda: all(self.banned_on(addr, origin, hosts).values()), timeout,
                   f"{addr} banned on {hosts}", lambda: f"{self.banned_on(addr, origin, hosts)}\n{self.site.info()}")

    def wait_lifted(self, addr: str, origin: str, timeout: float = 30) -> None:
        wait_until(lambda: not any(self.banned_on(addr, origin).values()), timeout, f"{addr} lifted everywhere",
                   lambda: f"{self.banned_on(addr, origin)}\n{self.site.info()}")


@pytest.fixture(scope="module")
def fleet() -> Iterator[Site]:
    problem = nats_problem()
    if problem:
        pytest.fail(f"NATS lab unavailable: {problem}")
    with fleet_site(HOSTS) as site:
        (protected,) = site.aliases(1)
        site.hosts["c"].bantime = str(SHORT)
        site.hosts["d"].ignoreip = f"127.0.0.1/8 {protected}"
        site.start(HOSTS[:4])
        site.hosts["e"].start(fleet=False)  # e's detector and responder run; it joins the fleet later
        yield Site(site, protected)


def test_a_scan_is_banned_on_every_host_and_a_late_joiner_catches_up(fleet: Site) -> None:
    s1, s2 = fleet.site.aliases(2)
    fleet.scan("a", s1)
    fleet.wait_banned(s1, "a", ("a", "b", "c", "d"))
    assert not fleet.h["e"].banned(s1)  # e has not joined
    shared = fleet.h["a"].machine.journal("SYSLOG_IDENTIFIER=portsentinel-responder", f"PS_SRC={s1}",
                                          "PS_EVENT=ban")
    assert shared and shared[0]["PS_SHARE"] == "1" and shared[0]["PS_JAIL"] == "portsentinel"

    fleet.h["e"].join()  # a new host: it takes the bucket's active bans
    fleet.wait_banned(s1, "a", ("e",))
    fleet.scan("a", s2)  # and live ones from then on
    fleet.wait_banned(s2, "a")
    e = fleet.h["e"]  # its status file (rewritten every second) counts both as a's
    wait_until(lambda: e.status().get("bans_by_origin", {}).get("a") == 2, 5, "e's status", lambda: str(e.status()))


def test_journalctl_on_a_receiving_host_shows_the_remote_ban_and_its_origin(fleet: Site) -> None:
    (s3,) = fleet.site.aliases(1)
    fleet.scan("b", s3)
    fleet.wait_banned(s3, "b")
    for name in ("a", "e"):
        host = fleet.h[name]
        bans = host.machine.journal(f"PS_SRC={s3}", "PS_EVENT=ban")  # journalctl PS_SRC=ADDR, on that host
        assert [(r["PS_JAIL"], r["PS_ORIGIN"], r["PS_ORIGIN_JAIL"]) for r in bans] == [("fleet", "b", "portsentinel")]
        assert bans[0]["SYSLOG_IDENTIFIER"] == "portsentinel-responder" and bans[0]["_UID"] == "0"
        # the origin's end of the ban travels with it (its until; 1 origin: x1)
        origin = fleet.h["b"].machine.journal(f"PS_SRC={s3}", "PS_EVENT=ban")[0]
        assert abs(float(bans[0]["PS_UNTIL"]) - float(origin["PS_UNTIL"])) < 1


def test_unban_fleet_on_one_host_lifts_the_ban_everywhere(fleet: Site) -> None:
    (s4,) = fleet.site.aliases(1)
    fleet.scan("a", s4)
    fleet.wait_banned(s4, "a")
    answer = fleet.h["c"].ask("unban", "--fleet", s4)
    assert answer.get("ok"), answer
    fleet.wait_lifted(s4, "a")
    lifted = fleet.h["a"].machine.journal(f"PS_SRC={s4}", "PS_EVENT=unban", "PS_JAIL=portsentinel")
    assert lifted, fleet.site.info()


def test_a_short_ban_ends_on_every_host(fleet: Site) -> None:
    (s5,) = fleet.site.aliases(1)
    fleet.scan("c", s5)  # c bans for SHORT seconds
    fleet.wait_banned(s5, "c", timeout=SHORT - 1)
    origin = fleet.h["c"].machine.journal(f"PS_SRC={s5}", "PS_EVENT=ban")[0]
    remote = fleet.h["d"].machine.journal(f"PS_SRC={s5}", "PS_EVENT=ban")[0]
    assert int(origin["PS_BANTIME"]) == SHORT and int(remote["PS_BANTIME"]) <= SHORT
    fleet.wait_lifted(s5, "c", timeout=SHORT + 20)
    ended = fleet.h["e"].machine.journal(f"PS_SRC={s5}", "PS_EVENT=unban")
    assert ended and ended[0]["PS_JAIL"] == "fleet" and ended[0]["PS_ORIGIN"] == "c"


def test_a_protected_address_is_refused_and_recorded_by_the_host_protecting_it(fleet: Site) -> None:
    addr = fleet.protected  # on d's never-ban list only
    fleet.scan("a", addr)
    fleet.wait_banned(addr, "a", ("a", "b", "c", "e"))
    d = fleet.h["d"]
    wait_until(lambda: bool(d.machine.journal(f"PS_SRC={addr}", "PS_EVENT=ignored")), 20, "d's refusal",
               fleet.site.info)
    refused = d.machine.journal(f"PS_SRC={addr}", "PS_EVENT=ignored")
    assert refused[0]["PS_JAIL"] == "fleet" and refused[0]["PS_ORIGIN"] == "a", refused
    assert "never banned" in refused[0]["MESSAGE"]
    assert not d.banned(addr) and not d.machine.journal(f"PS_SRC={addr}", "PS_EVENT=ban")


def test_a_remote_ban_of_a_hosts_own_address_is_refused_there(fleet: Site) -> None:
    """A scan of a forged from d's own address: a bans it, the others follow, d refuses a ban of itself."""
    d = fleet.h["d"]
    own = d.machine.addr4
    python_in(fleet.site.scanner, "from scapy.all import IP, TCP, send\n"  # a stealth SYN can carry any source
              f"send(IP(src='{own}', dst='{fleet.h['a'].machine.addr4}')/TCP(dport=[1, 11], flags='S'), "
              "iface='eth0', verbose=0)\n", timeout=30)
    fleet.wait_banned(own, "a", ("a", "b", "c", "e"))
    wait_until(lambda: bool(d.machine.journal(f"PS_SRC={own}", "PS_EVENT=ignored")), 20, "d's refusal",
               fleet.site.info)
    refused = d.machine.journal(f"PS_SRC={own}", "PS_EVENT=ignored")
    assert refused[0]["PS_JAIL"] == "fleet" and refused[0]["PS_ORIGIN"] == "a", refused
    assert "never banned" in refused[0]["MESSAGE"] and not d.banned(own)
    answer = fleet.h["a"].ask("unban", "--fleet", own)  # and lifted again, everywhere
    assert answer.get("ok"), answer
    fleet.wait_lifted(own, "a")
