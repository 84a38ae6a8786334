"""Answers counted by the protected namespace itself (tests and benchmarks): a table ``inet pstest`` of its own
counts, on its output path, every SYN-ACK, RST, ICMP/ICMPv6 destination-unreachable and UDP datagram it sends out
of its veth. Counting on the victim's side does not depend on what the scanner makes of the answers."""

from __future__ import annotations

import json

from .netns import Host

COUNT_TABLE = """
table inet pstest {
  counter synack {}
  counter rstout {}
  counter unreach {}
  counter udpout {}
  chain out { type filter hook output priority 0; policy accept;
    oifname "lo" return
    tcp flags & (syn|ack) == syn|ack counter name "synack"
    tcp flags & rst == rst counter name "rstout"
    icmp type destination-unreachable counter name "unreach"
    icmpv6 type destination-unreachable counter name "unreach"
    meta l4proto udp counter name "udpout"
  }
}
"""


def install_counters(host: Host) -> None:
    host.run(["nft", "-f", "-"], input=COUNT_TABLE)


def answers(host: Host, *, reset: bool = False) -> dict[str, int]:
    """Packets the host sent out per kind since the last reset (and reset them when asked)."""
    out = host.run(["nft", "-j", "reset" if reset else "list", "counters", "table", "inet", "pstest"]).stdout
    got = {}
    for item in json.loads(out)["nftables"]:
        if "counter" in item:
            got[item["counter"]["name"]] = int(item["counter"]["packets"])
    return got


def tcp_answers(host: Host) -> int:
    """SYN-ACKs and RSTs sent since the last reset: the TCP probes that were answered."""
    got = answers(host)
    return got["synack"] + got["rstout"]
