"""Set elements over netlink (responder.adapters.nftelems) through NftBatch and the in-process runner, in the
victim namespace's kernel: plain timeout sets take them in one transaction, anything else falls back to nft's
text with the same outcome as before."""

from __future__ import annotations

import json

import pytest

from tests.lab.detector import python_in
from tests.lab.netns import Lab

pytestmark = pytest.mark.lab

CODE = r"""
import json
from portsentinel.responder.adapters.libnft import NftRunner
from portsentinel.responder.adapters.nftbatch import NftBatch
from portsentinel.responder.adapters.runner import SubprocessRunner
r = NftRunner(SubprocessRunner())
r.run(["nft", "-f", "-"], input="add table inet pst\n"
      "add set inet pst v4 { type ipv4_addr; flags timeout; }\n"
      "add set inet pst v6 { type ipv6_addr; flags timeout; }\n"
      "add set inet pst v4net { type ipv4_addr; flags interval,timeout; }\n"
      "add set inet pst plain { type ipv4_addr; }\n")
out = {}
def run(name, groups):
    before = r.elements.commits
    nb = NftBatch(r, table="pst")
    for set_name, ips, touts in groups:
        nb.add_stored_many(set_name, ips, touts)
    res = nb.commit()
    out[name] = {"netlink": r.elements.commits - before, "applied": res.applied, "failed": len(res.failed)}
v4 = [f"100.75.{i // 250}.{i % 250 + 1}" for i in range(20000)]
run("hash", [("v4", v4, [600 + i % 7 for i in range(20000)]), ("v6", ["2001:db8::1", "2001:db8::2"], [0, 90])])
run("again", [("v4", v4[:10], [600] * 10)])
run("interval", [("v4net", ["100.76.0.0/24", "100.77.0.1"], [600, 600])])
run("no-timeout-flag", [("plain", ["100.78.0.1"], [600])])
run("without-timeout", [("v4", ["100.79.0.1"], [None])])
run("no-such-set", [("nosuch", ["100.79.0.2"], [600])])
import time
t0 = time.monotonic()
refused = r.elements.add("inet", "pst", [("v4", ["100.79.0.3", "100.79.0.4"], [600, 10**15])])  # ERANGE
out["refused"] = {"ok": refused, "seconds": round(time.monotonic() - t0, 3),
                  "after": r.elements.add("inet", "pst", [("v4", ["100.79.0.5"], [600])])}
print(json.dumps(out))
"""


def test_plain_timeout_sets_take_elements_over_netlink_and_the_rest_falls_back(lab: Lab) -> None:
    vic = lab.victim
    try:
        got = json.loads(python_in(vic, CODE, timeout=120).strip().splitlines()[-1])
        assert got["hash"] == {"netlink": 1, "applied": 20002, "failed": 0}
        assert got["again"] == {"netlink": 1, "applied": 10, "failed": 0}  # (adding an element that is there)
        for name in ("interval", "without-timeout"):
            assert got[name]["netlink"] == 0 and got[name]["failed"] == 0, (name, got[name])
        for name in ("no-timeout-flag", "no-such-set"):  # refused by nft's text too, as before
            assert got[name]["netlink"] == 0 and got[name]["failed"] == 1, (name, got[name])
        listed = vic.run(["nft", "list", "set", "inet", "pst", "v4"]).stdout
        assert listed.count(" timeout ") == 20001  # (and 100.79.0.5, below)
        assert "100.75.0.1 timeout 10m " in listed and "100.75.79.250 timeout 10m" in listed
        v6 = vic.run(["nft", "list", "set", "inet", "pst", "v6"]).stdout
        assert "2001:db8::1 timeout 1s" in v6 and "2001:db8::2 timeout 1m30s" in v6
        net = vic.run(["nft", "list", "set", "inet", "pst", "v4net"]).stdout
        assert "100.76.0.0/24" in net and "100.77.0.1" in net and "100.77.0.0" not in net.replace("100.77.0.1", "")
        assert "100.78.0.1" not in vic.run(["nft", "list", "set", "inet", "pst", "plain"]).stdout
        assert "100.79.0.1" in listed
        # a transaction the kernel refuses (a timeout beyond its range): nothing of it added, no wait for answers
        # that will not come, and the next one goes through on a new socket
        assert got["refused"]["ok"] is False and got["refused"]["seconds"] < 5 and got["refused"]["after"] is True
        listed = vic.run(["nft", "list", "set", "inet", "pst", "v4"]).stdout
        assert "100.79.0.3" not in listed and "100.79.0.5" in listed
    finally:
        vic.run(["nft", "delete", "table", "inet", "pst"], check=False)
