"""responder.deciding: how a large batch is cut into parts put in force while the rest is decided."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from portsentinel.responder.deciding import PART, parts


@given(st.integers(0, 100_000))
def test_parts_cover_the_batch(n: int) -> None:
    sizes = parts(n)
    assert sum(sizes) == n and all(0 < s <= PART for s in sizes)
    assert all(s == PART for s in sizes[:-1])
