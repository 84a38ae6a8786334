"""fail2ban's own sample suite (tests/files/logs of its Debian package): every stock filter, every
filterOptions set, every annotated line must agree with fail2ban (match, host, captures, time).

The runner is tests/samples/f2b_suite.py (``python -m tests.samples.f2b_suite -v`` prints a summary).
A filter knowingly different is listed in ``KNOWN_DIFFERENT`` there with its reason (today: none).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import stock_file
from tests.samples import f2b_suite as S


@pytest.fixture(scope="module", autouse=True)
def _fail2ban_clock() -> Iterator[None]:
    stock_file("fail2ban", "usr/lib/python3/dist-packages/fail2ban/tests/files/logs/sshd")
    with S.fail2ban_clock():
        yield


def test_the_suite_is_all_there() -> None:
    names = [n for n, _ in S.suite_filters()]
    assert len(names) >= 90 and "sshd" in names and "zzz-sshd-obsolete-multiline" in names
    missing = [n for n in names if not (S.LOGS / n).is_file()]
    assert missing == [], f"filters without a sample file: {missing}"


@pytest.mark.parametrize("name", [n for n, _ in S.suite_filters()] if S.STOCK_DIR.is_dir() else ["sshd"])
def test_fail2ban_samples(name: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    basedir = dict(S.suite_filters())[name]
    if basedir == S.TEST_DIR:
        basedir = S.test_filter_dir(tmp_path_factory.mktemp("f2b"))
    out = S.run_filter(name, basedir)
    assert out.lines > 0, f"{name}: no sample line was compared"
    if name in S.KNOWN_DIFFERENT:
        pytest.xfail(S.KNOWN_DIFFERENT[name])
    assert out.problems == [], f"{name}: {out.agree}/{out.lines} agree:\n" + "\n".join(out.problems)
