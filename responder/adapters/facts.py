"""System facts for the never-ban set: own addresses, default gateways, resolvers (of this namespace)."""

from __future__ import annotations

import json
import re
import subprocess


def _ip_json(*args: str) -> list[dict[str, object]]:
    try:
        out = subprocess.run(["ip", "-j", *args], capture_output=True, text=True, timeout=5, check=False)
        data = json.loads(out.stdout or "[]")
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return []
    return [d for d in data if isinstance(d, dict)] if isinstance(data, list) else []


def own_addresses() -> list[str]:
    out = []
    for link in _ip_json("addr", "show"):
        infos = link.get("addr_info")
        for info in infos if isinstance(infos, list) else []:
            if isinstance(info, dict) and isinstance(info.get("local"), str):
                out.append(str(info["local"]).split("%")[0])
    return out


def gateways() -> list[str]:
    out = []
    for fam in ("-4", "-6"):
        for route in _ip_json(fam, "route", "show", "default"):
            gw = route.get("gateway")
            if isinstance(gw, str):
                out.append(gw.split("%")[0])
    return out


def resolvers(path: str = "/etc/resolv.conf") -> list[str]:
    out = []
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                m = re.match(r"\s*nameserver\s+(\S+)", line)
                if m:
                    out.append(m.group(1).split("%")[0])
    except OSError:
        pass
    return out
