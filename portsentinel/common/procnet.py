"""The socket tables in /proc/net/{tcp,udp}[6], read one way for both stages (the detector's ports in use, the
kernel trap's listening sets). Pure enough to test on a file; a missing or unreadable table is empty."""

from __future__ import annotations

PROC = "/proc/net"


def table_ports(path: str, state: str | None = None) -> set[int]:
    """Local ports of the sockets in one table, in ``state`` (two hex digits: ``0A`` TCP LISTEN, ``07`` an
    unconnected UDP socket) or in any state."""
    out: set[int] = set()
    try:
        with open(path, encoding="ascii", errors="replace") as fh:
            next(fh, None)
            for line in fh:
                parts = line.split(None, 4)
                if len(parts) < 2 or (state is not None and (len(parts) < 4 or parts[3] != state)):
                    continue
                try:
                    out.add(int(parts[1].rpartition(":")[2], 16))
                except ValueError:
                    continue
    except (FileNotFoundError, PermissionError):
        pass
    return out


def ports(proto: str, root: str = PROC, state: str | None = None) -> frozenset[int]:
    """Both families' table of ``proto`` ("tcp" or "udp")."""
    return frozenset(table_ports(f"{root}/{proto}", state) | table_ports(f"{root}/{proto}6", state))
