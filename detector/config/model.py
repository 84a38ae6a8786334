"""The detector's typed configuration: one object that every part of the detector reads.

Parsers (``own_grammar.py`` for the project's own format, ``portsentry_conf.py`` for a classic
portsentry.conf) fill it; the command line overrides some fields afterwards. No I/O here.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from portsentinel.common import paths

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# PortSentry 1.2's stock lists (Debian's /etc/portsentry/portsentry.conf), the embedded default.
DEFAULT_TCP_PORTS = (1, 11, 15, 79, 111, 119, 143, 540, 635, 1080, 1524, 2000, 5742, 6667, 12345, 12346,
                     20034, 27665, 31337, 32771, 32772, 32773, 32774, 40421, 49724, 54320)
DEFAULT_UDP_PORTS = (1, 7, 9, 69, 161, 162, 513, 635, 640, 641, 700, 37444, 34555, 31335, 32770, 32771,
                     32772, 32773, 32774, 31337, 54321)
# SCTP has no PortSentry list: the IANA-registered SCTP ports a scanner tries first (echo, discard, web, SSH,
# BGP, SIP, the SS7-over-IP and Diameter ports of telephony cores, and the LTE/5G S1/X2/NG control ports).
DEFAULT_SCTP_PORTS = (1, 7, 9, 20, 21, 22, 80, 179, 443, 1167, 1720, 2000, 2225, 2427, 2904, 2905, 2944, 2945,
                      3097, 3565, 3863, 3864, 3868, 4739, 5060, 5061, 5090, 6704, 6705, 7626, 8282, 9899, 14001,
                      20049, 29118, 29168, 36412, 36422, 36443, 38412, 38422)


class ConfigError(ValueError):
    """A configuration error naming where it is: ``file:line: key: reason``."""

    def __init__(self, path: str, line: int, key: str, reason: str) -> None:
        where = f"{path}:{line}" if line else path
        super().__init__(f"{where}: {key}: {reason}" if key else f"{where}: {reason}")
        self.path = path
        self.line = line
        self.key = key
        self.reason = reason


@dataclass
class DetectorConfig:
    """Every detector option, with defaults that protect a host out of the box."""

    #: Sentries to run, any of tcp, udp, stcp, sudp, ssctp, atcp, audp, asctp, aproto.
    modes: tuple[str, ...] = ("stcp", "sudp", "ssctp", "aproto")
    #: Interface the stealth and advanced sentries watch; "any" for all.
    interface: str = "any"
    #: journal, jsonl, or auto (journal when a journald socket exists, else jsonl).
    output: str = "auto"
    jsonl_path: str = paths.ALERTS_JSONL
    #: The responder's wake socket: a data-less datagram after each alert record cuts its reaction time.
    wake_socket: str = paths.WAKE_SOCKET
    #: The detector's own re-arm socket: the responder names the sources whose ban ended, and their next probe
    #: is reported as a new scan (docs/responder.md). Empty: off.
    rearm_socket: str = paths.REARM_SOCKET
    tcp_ports: tuple[int, ...] = DEFAULT_TCP_PORTS
    udp_ports: tuple[int, ...] = DEFAULT_UDP_PORTS
    #: Advanced modes watch every port from 1 up to this bound (PortSentry's ADVANCED_PORTS_*).
    advanced_tcp: int = 1024
    advanced_udp: int = 1024
    advanced_exclude_tcp: tuple[int, ...] = (113, 139)
    advanced_exclude_udp: tuple[int, ...] = (520, 138, 137, 67)
    #: SCTP: the stealth list (ssctp), and the advanced bound and exclusions (asctp). SCTP services live above
    #: 1024 (2905, 3868, 36412 …) and a host rarely has any, so the advanced sentry watches every port.
    sctp_ports: tuple[int, ...] = DEFAULT_SCTP_PORTS
    advanced_sctp: int = 65535
    advanced_exclude_sctp: tuple[int, ...] = ()
    #: The IP-protocol sentry (aproto, nmap -sO) reports a source on its (proto_trigger + 1)-th distinct protocol
    #: number with no handler on this host, within the window (psad's PROTOCOL_SCAN_THRESHOLD is 5 too).
    proto_trigger: int = 4
    #: Protocol numbers the IP-protocol sentry never counts, on top of those the host handles (e.g. 50, 51 for
    #: IPsec, 47 for a GRE peer).
    proto_exclude: tuple[int, ...] = ()
    #: SCAN_TRIGGER: a source is reported on its (trigger + 1)-th probe within the window; 0 = first probe.
    scan_trigger: int = 0
    #: Seconds a source's probes are remembered.
    window: float = 60.0
    #: Seconds between summary records for a source that keeps probing after it triggered.
    summary_interval: float = 30.0
    #: Cap on tracked sources; the least recently seen is evicted (and counted) beyond it.
    max_sources: int = 65536
    #: Cap on scan records per second (journald drops a noisy service's messages; a spoofed flood must not).
    max_records_per_second: int = 50
    #: Sources are counted per network of this many bits (32: per IPv4 address). PS_SRC stays the address;
    #: PS_SRC_NET names the network when it is wider than one address.
    ipv4_prefix: int = 32
    #: IPv6 sources are counted per /64 by default: one host owns a /64 and can rotate through it.
    ipv6_prefix: int = 64
    ignore: tuple[IPNetwork, ...] = (
        ipaddress.ip_network("127.0.0.0/8"),
        ipaddress.ip_network("::1/128"),
    )
    ignore_file: str = ""
    #: Never report the host's own addresses.
    ignore_self: bool = True
    history_file: str = ""
    resolve_host: bool = False
    port_banner: str = ""
    #: Prometheus metrics (docs/metrics.md): an HTTP endpoint (HOST:PORT; empty: none) and/or a node_exporter
    #: textfile written every metrics_interval seconds (empty: none). Both off by default.
    metrics_listen: str = ""
    metrics_textfile: str = ""
    metrics_interval: float = 10.0
    #: PortSentry's BLOCK_TCP / BLOCK_UDP (0 alert only, 1 block, 2 run KILL_RUN_CMD only), validated only:
    #: `portsentinel import-portsentry` reads them from the file itself; the detector never blocks.
    block_tcp: int = 1
    block_udp: int = 1
    #: Keys that belong to the responder (KILL_*, BLOCKED_FILE), kept as read, for the report and the responder.
    responder_keys: dict[str, str] = field(default_factory=dict)
    #: Where the configuration came from ("" for the embedded default), and its format.
    source: str = ""
    source_format: str = "default"

    def watched_ports(self, proto: str, mode: str, in_use: frozenset[int] = frozenset()) -> frozenset[int]:
        """Ports a sentry watches: the list, or every port below the bound minus excluded and in-use ones."""
        if mode in ("tcp", "stcp"):
            return frozenset(self.tcp_ports)
        if mode in ("udp", "sudp"):
            return frozenset(self.udp_ports)
        if mode == "atcp":
            return frozenset(range(1, self.advanced_tcp + 1)) - set(self.advanced_exclude_tcp) - in_use
        if mode == "audp":
            return frozenset(range(1, self.advanced_udp + 1)) - set(self.advanced_exclude_udp) - in_use
        if mode == "ssctp":
            return frozenset(self.sctp_ports)
        if mode == "asctp":
            return frozenset(range(1, self.advanced_sctp + 1)) - set(self.advanced_exclude_sctp) - in_use
        raise ValueError(f"unknown mode {mode!r}")
