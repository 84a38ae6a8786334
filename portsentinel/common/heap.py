"""The garbage collector beside a large, long-lived heap (a responder holding 100,000 bans, a fleet catch-up).

Python's cyclic collector walks every object it tracks on each full pass; with hundreds of thousands of bans and
their records alive for hours, those passes grow with the heap while finding nothing: bans hold no reference
cycles. :meth:`HeapFreezer.batch_done`, after a large batch, moves what is alive into the permanent generation
(``gc.freeze``), so later passes only walk what was made since. A freeze also keeps whatever cyclic garbage
existed at that moment (an exception's traceback, say) until the next full collection: so once nothing large has
been applied for ``idle`` seconds, :meth:`HeapFreezer.tick` runs one (``gc.unfreeze``, ``gc.collect``) and
freezes only what survived it.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable

#: Seconds without a large batch before the frozen heap gets its one full collection.
IDLE = 60.0


class HeapFreezer:
    def __init__(self, idle: float = IDLE, clock: Callable[[], float] = time.monotonic) -> None:
        self.idle = idle
        self.clock = clock
        self._since: float | None = None
        #: Full collections run by :meth:`tick` (for tests and status).
        self.collections = 0

    def batch_done(self) -> None:
        """A large batch was applied: what is alive now is frozen."""
        gc.freeze()
        self._since = self.clock()

    def tick(self) -> None:
        """Once ``idle`` seconds passed since the last freeze: one full collection, then what survived frozen."""
        if self._since is None or self.clock() - self._since < self.idle:
            return
        self._since = None
        gc.unfreeze()
        gc.collect()
        gc.freeze()
        self.collections += 1
