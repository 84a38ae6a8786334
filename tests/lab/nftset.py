"""What a lab host's kernel holds in an nftables set, read with ``nft -j list set`` inside its namespace.

The nftables action keeps a jail's bans of one family in two sets: addresses in ``<name>_v4`` / ``<name>_v6``
(hash sets) and networks in ``<name>_v4net`` / ``<name>_v6net`` (interval sets). Asked for a set whose name ends
in ``_v4`` or ``_v6``, the readers here give both sets' elements (``only=True``: the named set alone)."""

from __future__ import annotations

import json

from tests.lab.netns import Host


def _one_set(host: Host, set_name: str, table: str, missing_ok: bool, timeout: float) -> list[str | int]:
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


def set_elements(host: Host, set_name: str, *, table: str = "portsentinel", missing_ok: bool = False,
                 timeout: float = 120, only: bool = False) -> list[str | int]:
    """A set's elements: addresses as text, networks as ``addr/len``, ports as numbers; for ``<name>_v4`` /
    ``<name>_v6`` (unless ``only``) followed by those of its network set ``<name>_v4net`` / ``<name>_v6net`` when
    it exists. A set that does not exist raises, or gives ``[]`` with ``missing_ok``."""
    got = _one_set(host, set_name, table, missing_ok, timeout)
    if not only and set_name.endswith(("_v4", "_v6")):
        got += _one_set(host, set_name + "net", table, True, timeout)
    return got


def set_addresses(host: Host, set_name: str, *, table: str = "portsentinel", missing_ok: bool = False,
                  timeout: float = 120, only: bool = False) -> set[str]:
    """The elements (as :func:`set_elements`) as a set of text (addresses and networks)."""
    return {str(v) for v in set_elements(host, set_name, table=table, missing_ok=missing_ok, timeout=timeout,
                                         only=only)}
