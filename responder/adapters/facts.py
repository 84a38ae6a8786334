"""System facts for the never-ban set, of this network namespace: own addresses, default gateways, resolvers.

Addresses and routes come from rtnetlink dumps (no ``ip`` process; parsing in responder.core.hostfacts); resolvers
from /etc/resolv.conf, systemd-resolved's upstream list (/run/systemd/resolve/resolv.conf, not only its
127.0.0.53 stub), systemd-networkd's per-link DNS and resolved.conf's DNS=/FallbackDNS=.
"""

from __future__ import annotations

import glob
import itertools
import socket

from portsentinel.responder.core import hostfacts as H

#: resolv.conf-style files: the libc one, and systemd-resolved's list of its upstream servers.
RESOLV_FILES = ("/etc/resolv.conf", "/run/systemd/resolve/resolv.conf")
#: systemd-networkd's per-link state (DNS=), and resolved.conf with its drop-ins (DNS=, FallbackDNS=).
DNS_GLOBS = ("/run/systemd/netif/links/*", "/etc/systemd/resolved.conf", "/etc/systemd/resolved.conf.d/*.conf",
             "/run/systemd/resolved.conf.d/*.conf")
#: Directories whose changes may change the resolvers (watched by responder.adapters.hostwatch).
RESOLVER_DIRS = ("/etc", "/run/systemd/resolve", "/run/systemd/netif/links", "/etc/systemd",
                 "/etc/systemd/resolved.conf.d", "/run/systemd/resolved.conf.d")

_seq = itertools.count(1)


def _dump(kind: int, timeout: float = 2.0) -> list[H.Message]:
    """Every message of an rtnetlink dump (addresses or routes, both families); [] when netlink fails."""
    out: list[H.Message] = []
    try:
        with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE) as s:
            s.settimeout(timeout)
            s.bind((0, 0))
            seq = next(_seq)
            s.send(H.dump_request(kind, 0, seq))
            while True:
                data = s.recv(1 << 16)
                for m in H.messages(data):
                    if m.seq != seq:
                        continue
                    if m.type in (H.NLMSG_DONE, H.NLMSG_ERROR):
                        return out
                    out.append(m)
                if not data:
                    return out
    except OSError:
        return out


def own_addresses() -> list[str]:
    return [a for m in _dump(H.RTM_GETADDR) if m.type == H.RTM_NEWADDR and (a := H.address_of(m.payload))]


def gateways() -> list[str]:
    return [g for m in _dump(H.RTM_GETROUTE) if m.type == H.RTM_NEWROUTE for g in H.gateways_of(m.payload)]


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read(1 << 20)
    except OSError:
        return ""


def resolvers(paths: tuple[str, ...] = RESOLV_FILES, dns_globs: tuple[str, ...] = DNS_GLOBS) -> list[str]:
    out: list[str] = []
    for path in paths:
        out += H.resolv_conf(_read(path))
    for pattern in dns_globs:
        for path in sorted(glob.glob(pattern)):
            out += H.dns_lines(_read(path))
    return list(dict.fromkeys(out))
