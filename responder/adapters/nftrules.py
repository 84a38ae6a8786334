"""The sets an nftables chain's rules look addresses up in, asked of the kernel over netlink (NFT_MSG_GETRULE,
one chain's dump), so the cost does not grow with the sets: ``nft list chain`` fetches every element of those
sets first (46.6 s for a set of 1,000,000 elements, docs/performance.md "Restart with hash sets")."""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Iterator

NETLINK_NETFILTER = 12
NFNL_SUBSYS_NFTABLES = 10
NFT_MSG_GETCHAIN = 4
NFT_MSG_GETRULE = 7
NLM_F_REQUEST, NLM_F_ACK, NLM_F_DUMP = 0x1, 0x4, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
FAMILIES = {"inet": 1, "ip": 2, "ip6": 10}
NFTA_RULE_TABLE, NFTA_RULE_CHAIN, NFTA_RULE_EXPRESSIONS = 1, 2, 4
NFTA_CHAIN_TABLE, NFTA_CHAIN_NAME = 1, 3
NFTA_LIST_ELEM, NFTA_EXPR_NAME, NFTA_EXPR_DATA, NFTA_LOOKUP_SET = 1, 1, 2, 1

_NLMSG = struct.Struct("=IHHII")
_NLA = struct.Struct("=HH")


def _attr(kind: int, text: str) -> bytes:
    data = text.encode() + b"\0"
    return _NLA.pack(_NLA.size + len(data), kind) + data + b"\0" * (-len(data) % 4)


def attributes(data: bytes) -> list[tuple[int, bytes]]:
    out, off = [], 0
    while off + _NLA.size <= len(data):
        length, kind = _NLA.unpack_from(data, off)
        if length < _NLA.size:
            break
        out.append((kind & 0x3FFF, data[off + _NLA.size:off + length]))
        off += (length + 3) & ~3
    return out


def _text(data: bytes) -> str:
    return data.split(b"\0", 1)[0].decode(errors="replace")


def lookup_sets(rule: bytes) -> set[str]:
    """The sets a rule's ``lookup`` expressions name (``rule``: the attributes after the nfgenmsg header)."""
    found: set[str] = set()
    for kind, value in attributes(rule):
        if kind != NFTA_RULE_EXPRESSIONS:
            continue
        for ekind, elem in attributes(value):
            if ekind != NFTA_LIST_ELEM:
                continue
            parts = dict(attributes(elem))
            if _text(parts.get(NFTA_EXPR_NAME, b"")) == "lookup":
                for dkind, dval in attributes(parts.get(NFTA_EXPR_DATA, b"")):
                    if dkind == NFTA_LOOKUP_SET:
                        found.add(_text(dval))
    return found


def messages(data: bytes) -> Iterator[tuple[int, bytes]]:
    """(type, payload after the netlink header) of each message in one buffer the kernel sent."""
    off = 0
    while off + _NLMSG.size <= len(data):
        length, mtype, _f, _seq, _pid = _NLMSG.unpack_from(data, off)
        if length < _NLMSG.size:
            return
        yield mtype, data[off + _NLMSG.size:off + length]
        off += (length + 3) & ~3


def error_of(payload: bytes) -> int:
    """The errno of an NLMSG_ERROR message's payload (0: an acknowledgement)."""
    return -int(struct.unpack_from("=i", payload)[0])


def _ask(family: str, msg: int, flags: int, attrs: bytes, timeout: float) -> list[bytes]:
    """One request; the payloads (after nfgenmsg) of the answers. OSError with the kernel's errno on an error."""
    head = struct.pack("=BBH", FAMILIES[family], 0, 0)
    body = head + attrs
    req = _NLMSG.pack(_NLMSG.size + len(body), NFNL_SUBSYS_NFTABLES << 8 | msg, flags, 1, 0) + body
    out: list[bytes] = []
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_NETFILTER) as s:
        s.settimeout(timeout)
        s.bind((0, 0))
        s.send(req)
        while True:
            for mtype, payload in messages(s.recv(1 << 16)):
                if mtype == NLMSG_DONE:
                    return out
                if mtype == NLMSG_ERROR:
                    err = error_of(payload)
                    if err:
                        raise OSError(err, f"netlink: {os.strerror(err)}")
                    return out
                out.append(payload[4:])
            if not flags & NLM_F_DUMP:
                return out


def chain_sets(family: str, table: str, chain: str, timeout: float = 10.0) -> set[str]:
    """The sets the chain's rules look up; OSError (ENOENT) when the table or chain does not exist."""
    _ask(family, NFT_MSG_GETCHAIN, NLM_F_REQUEST | NLM_F_ACK,
         _attr(NFTA_CHAIN_TABLE, table) + _attr(NFTA_CHAIN_NAME, chain), timeout)
    rules = _ask(family, NFT_MSG_GETRULE, NLM_F_REQUEST | NLM_F_DUMP,
                 _attr(NFTA_RULE_TABLE, table) + _attr(NFTA_RULE_CHAIN, chain), timeout)
    found: set[str] = set()
    for rule in rules:
        found |= lookup_sets(rule)
    return found
