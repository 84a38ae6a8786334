"""What a lab host's kernel holds in an nftables set, read with ``nft -j list set`` inside its namespace."""

from __future__ import annotations

import json

from tests.lab.netns import Host


def set_elements(host: Host, set_name: str, *, table: str = "portsentinel", missing_ok: bool = False,
                 timeout: float = 120) -> list[str | int]:
    """A set's elements: addresses as text, networks as ``addr/len``, ports as numbers. A set that does not exist
    raises, or gives ``[]`` with ``missing_ok``."""
    out = host.run(["nft", "-j", "list", "set", "inet", table, set_name], check=not missing_ok, timeout=timeout)
    if out.returncode != 0:
        return []
    for item in json.loads(out.stdout)["nftables"]:
        if "set" in item:
            got: list[str | int] = []
            for e in item["set"].get("elem", []):
                val = e["elem"]["val"] if isinstance(e, dict) and "elem" in e else e
                if isinstance(val, dict) and "prefix" in val:
                    val = f"{val['prefix']['addr']}/{val['prefix']['len']}"
                got.append(val)
            return got
    return []


def set_addresses(host: Host, set_name: str, *, table: str = "portsentinel", missing_ok: bool = False,
                  timeout: float = 120) -> set[str]:
    """The set's elements as a set of text (addresses and networks)."""
    return {str(v) for v in set_elements(host, set_name, table=table, missing_ok=missing_ok, timeout=timeout)}
