"""nft transactions committed on one worker thread while the caller goes on (Executor.ban_many_later).

A large batch of bans is decided a few thousand entries at a time; each part's set elements are committed by the
worker while the next part is decided: libnftables runs with the GIL released (ctypes), so the kernel's work on
one part overlaps Python's on the next (the restore does the same, responder.actions.restore). The worker has its
own libnftables context (a context is not shared between threads); its transactions run in the order submitted.
Nothing else may change the same sets until they are waited for (responder.core.keeper settles the early bans
before any other step).
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable

from portsentinel.responder.adapters.libnft import NftRunner
from portsentinel.responder.adapters.nftbatch import CommitResult, NftBatch
from portsentinel.responder.adapters.runner import Runner


class EarlyCommits:
    """The worker thread (started at the first :meth:`submit`) and its nft runner."""

    def __init__(self, nft_runner: Runner, runner: Runner) -> None:
        self._nft_runner = nft_runner
        self._inner = runner
        self._runner: Runner | None = None
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None

    def runner(self) -> Runner:
        """The worker's runner, for the batches given to :meth:`submit`: its own libnftables context when the
        executor's is one, else the executor's runner itself (a test's)."""
        if self._runner is None:
            nft = self._nft_runner
            self._runner = NftRunner(self._inner) if isinstance(nft, NftRunner) else nft
        return self._runner

    def submit(self, batch: NftBatch) -> Callable[[], CommitResult]:
        """``batch.commit()`` on the worker; the function returned waits for its result (or raises its error)."""
        return self._worker().submit(batch.commit, batch.bulk_text()).result  # (its text made here: no GIL there)

    def ready(self) -> None:
        """The worker and its context made now (the responder's start), not at the first batch."""
        self.runner()
        self._worker()

    def _worker(self) -> concurrent.futures.ThreadPoolExecutor:
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="portsentinel-nft")
        return self._pool

    def close(self) -> None:
        """Wait for what was submitted; the worker and its context go."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        runner, self._runner = self._runner, None
        if isinstance(runner, NftRunner) and runner is not self._nft_runner:
            runner.close()
