"""portsentinel.common.heap: a freeze after a large batch keeps later collections off the frozen heap; the idle
tick's full collection frees the cyclic garbage that the freeze kept."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from portsentinel.common.heap import HeapFreezer


class Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic collector frees it


@pytest.fixture(autouse=True)
def unfrozen() -> Iterator[None]:
    yield
    gc.unfreeze()


def test_garbage_kept_by_a_freeze_is_freed_by_the_idle_collection() -> None:
    now = [0.0]
    heap = HeapFreezer(idle=60.0, clock=lambda: now[0])
    node = Node()
    gone = weakref.ref(node)
    del node  # cyclic garbage, not collected yet
    heap.batch_done()
    assert gc.get_freeze_count() > 0
    gc.collect()
    assert gone() is not None  # frozen: an ordinary collection does not see it
    now[0] = 59.0
    heap.tick()
    assert gone() is not None and heap.collections == 0
    now[0] = 60.0
    heap.tick()
    assert gone() is None and heap.collections == 1
    now[0] = 1000.0
    heap.tick()  # nothing frozen by a batch since: no second full collection
    assert heap.collections == 1


def test_each_batch_moves_the_idle_deadline() -> None:
    now = [0.0]
    heap = HeapFreezer(idle=10.0, clock=lambda: now[0])
    heap.batch_done()
    now[0] = 8.0
    heap.batch_done()
    now[0] = 15.0
    heap.tick()
    assert heap.collections == 0
    now[0] = 18.0
    heap.tick()
    assert heap.collections == 1
