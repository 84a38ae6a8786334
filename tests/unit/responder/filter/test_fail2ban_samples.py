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


# Production mode (first match wins, no-failure and pending lines stop the search), against the real
# fail2ban-regex on the same sample file: the same failures, in the same order.
PRODUCTION = ["sshd", "postfix", "dovecot", "apache-auth", "sendmail-reject", "nginx-http-auth"]


@pytest.mark.parametrize("name", PRODUCTION)
def test_production_mode_matches_fail2ban_regex(name: str) -> None:
    import os
    import subprocess
    import time

    from portsentinel.responder.filter.filters import load_filter

    log = S.LOGS / name
    env = {**os.environ, "PYTHONPATH": str(S.F2B / "usr/lib/python3/dist-packages")}
    proc = subprocess.run(["/usr/bin/python3", str(S.F2B / "usr/bin/fail2ban-regex"), "-c", str(S.STOCK_DIR.parent),
                           "--raw", "-o", "ip", str(log), name], capture_output=True, text=True, env=env, timeout=120,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    theirs = [h for h in proc.stdout.splitlines() if h.strip()]
    flt = load_filter(S.STOCK_DIR, name, {})
    now = time.time()
    ours: list[str] = []
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith("#") or not line.strip():
            continue
        v = flt.examine_line(line, now)
        if v.kind == "matched" or "not an IP address" in v.reason:
            ours.append(v.host)
    assert len(theirs) > 0 and ours == theirs
