"""Reverse DNS for RESOLVE_HOST, bounded in time. The answer is attacker-controlled text."""

from __future__ import annotations

import socket
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="resolve")


def _lookup(addr: str) -> str:
    try:
        return socket.gethostbyaddr(addr)[0]
    except OSError:
        return ""


def reverse_name(addr: str, timeout: float = 0.5) -> str:
    """The PTR name of ``addr``, or "" when there is none within ``timeout`` seconds."""
    try:
        return _pool.submit(_lookup, addr).result(timeout=timeout)
    except FutureTimeout:
        return ""
