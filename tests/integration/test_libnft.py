"""In-process libnftables, run inside the victim namespace (never the host's)."""

from __future__ import annotations

import pytest

from tests.lab.detector import python_in
from tests.lab.netns import Lab

pytestmark = pytest.mark.lab

CODE = """
from portsentinel.responder.adapters.libnft import NftRunner
from portsentinel.responder.adapters.runner import SubprocessRunner
r = NftRunner(SubprocessRunner())
assert r.lib is not None
ok = r.run(["nft", "-f", "-"], input="add table inet t1\\nadd set inet t1 s {{ type ipv4_addr; flags timeout; }}\\n"
                                     "add element inet t1 s {{ 192.0.2.7 timeout 60s }}\\n")
bad = r.run(["nft", "-f", "-"], input="add element inet t1 nosuchset {{ 192.0.2.8 }}\\n")
listed = r.run(["nft", "list", "set", "inet", "t1", "s"])
print(ok.status, bad.status, "nosuchset" in bad.stderr or "No such file" in bad.stderr, "192.0.2.7" in listed.stdout)
"""


def test_libnft_batch_in_namespace(lab: Lab) -> None:
    from tests.lab.detector import ROOT

    out = python_in(lab.victim, CODE.format(root=str(ROOT)))
    assert out.split() == ["0", "1", "True", "True"]
    assert "t1" in lab.victim.run(["nft", "list", "tables"]).stdout
