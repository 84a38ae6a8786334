"""portsentinel.fleet.audit: a catch-up of 100,000 entries is a handful of records."""

from __future__ import annotations

from portsentinel import record as R
from portsentinel.fleet.audit import MAX_ORIGINS, Audit


def test_a_flood_is_a_handful_of_records() -> None:
    audit = Audit(interval=10)
    for i in range(100_000):
        audit.count("applied")
        audit.refuse(f"h{i % 50}", f"reason {i}")
    audit.event(R.Event.SUMMARY, "fleet: connected", 0.0, PS_DETAIL="connected")
    out = audit.due(0.0)
    assert len(out) == 1 + 1 + MAX_ORIGINS + 1
    assert out[0].get(R.F_DETAIL) == "connected"
    assert out[1].get(R.F_DETAIL) == "applied 100000"
    ignored = [r for r in out if r.event == "ignored"]
    assert sum(int(r.get(R.F_HITS)) for r in ignored) == 100_000
    assert ignored[0].get(R.F_ORIGIN) and ignored[0].get(R.F_IDENT) == "portsentinel-fleet"
    assert ignored[0].get(R.F_DETAIL).count("reason") == 3
    assert audit.due(5.0) == []  # nothing new, and the interval has not passed
    audit.count("applied", 2)
    assert audit.due(5.0) == [] and len(audit.due(5.0, force=True)) == 1
    assert audit.totals["applied"] == 100_002 and audit.totals["refused"] == 100_000
