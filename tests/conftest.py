"""Shared fixtures: the namespace lab and the private journald."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from tests.lab.netns import Lab, lab_problem, sweep_stale

# Tests assert behaviour, never timings: no per-example deadline (hypothesis's 200 ms fails a busy 2-core CI
# machine as "flaky" when a rerun of the same example is fast).
settings.register_profile("portsentinel", deadline=None)
settings.load_profile("portsentinel")

ROOT = Path(__file__).resolve().parent.parent

CACHE = ROOT / "tests" / ".cache"


def _new_lab() -> Iterator[Lab]:
    problem = lab_problem()
    if problem:
        pytest.fail(f"lab unavailable: {problem}")
    sweep_stale()
    with Lab() as the_lab:
        yield the_lab


@pytest.fixture
def lab() -> Iterator[Lab]:
    """An attacker and a victim namespace over veth; removed even when the test fails."""
    yield from _new_lab()


@pytest.fixture
def journald() -> str:
    """The private journald started by scripts/with-journald.sh; fails when the tests run outside it."""
    if os.environ.get("PORTSENTINEL_PRIVATE_JOURNALD") != "1":
        pytest.fail("journald tests must run under scripts/test.sh (private journald)")
    if not Path("/run/systemd/journal/socket").is_socket():
        pytest.fail("private journald socket missing")
    assert shutil.which("journalctl")
    return "/run/systemd/journal/socket"


def stock_file(pkg: str, rel: str) -> Path:
    """A file from a peer tool's Debian package, unpacked by scripts/setup.sh --test."""
    path = CACHE / pkg / rel
    if not path.exists():
        pytest.fail(f"{path} missing: run scripts/setup.sh --test")
    return path


@pytest.fixture(scope="module")
def mlab() -> Iterator[Lab]:
    """A lab shared by the tests of one module (each test uses its own source addresses)."""
    yield from _new_lab()
