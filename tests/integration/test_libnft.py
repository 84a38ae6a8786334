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
words = r.run(["nft", "add element inet t1 s {{ 192.0.2.9 }}; delete element inet t1 s {{ 192.0.2.7 }}"])
bad_words = r.run(["nft", "delete", "element", "inet", "t1", "nosuchset", "{{ 192.0.2.9 }}"])
listed = r.run(["nft", "list", "set", "inet", "t1", "s"])
print(ok.status, bad.status, "nosuchset" in bad.stderr or "No such file" in bad.stderr, "192.0.2.7" in listed.stdout,
      words.status, bad_words.status, "192.0.2.9" in listed.stdout)
"""


def test_libnft_batch_in_namespace(lab: Lab) -> None:
    from tests.lab.detector import ROOT

    out = python_in(lab.victim, CODE.format(root=str(ROOT)))
    # nft -f - batches, and plain `nft WORD…` commands (an action's lines) joined into one buffer as nft does
    assert out.split() == ["0", "1", "True", "False", "0", "1", "True"]
    assert "t1" in lab.victim.run(["nft", "list", "tables"]).stdout
