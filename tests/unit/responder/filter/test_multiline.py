"""responder.filter.multiline through real filters: sessions (<F-MLFID>) and maxlines buffers."""

from __future__ import annotations

from pathlib import Path

from portsentinel.responder.filter.filters import load_filter
from tests.conftest import stock_file

NOW = 1_900_000_000.0


def stock_sshd() -> Path:
    return stock_file("fail2ban", "etc/fail2ban/filter.d/sshd.conf").parent


def test_sshd_session_lends_its_address_to_a_later_line() -> None:
    flt = load_filter(stock_sshd(), "sshd", {})
    first = flt.examine_line("Jul  5 06:25:19 gw sshd[77]: Connection from 192.0.2.7 port 5122 on 10.0.0.1 port 22",
                             NOW)
    assert first.kind == "ignored"  # <F-NOFAIL>: a connection is no failure by itself
    later = flt.examine_line("Jul  5 06:25:21 gw sshd[77]: Disconnecting: Too many authentication failures "
                             "[preauth]", NOW)
    assert later.kind == "matched" and later.host == "192.0.2.7"
    # another session (pid) without a known address: pending, not a failure
    other = flt.examine_line("Jul  5 06:25:22 gw sshd[78]: Disconnecting: Too many authentication failures "
                             "[preauth]", NOW)
    assert other.kind == "ignored" and "pending" in other.reason


def test_sshd_nofail_becomes_failure_with_two_users() -> None:
    flt = load_filter(stock_sshd(), "sshd", {})
    pk = "Jul  5 06:25:19 gw sshd[90]: Failed publickey for {} from 192.0.2.9 port 5 ssh2: RSA SHA256:x"
    assert flt.examine_line(pk.format("alice"), NOW).kind == "ignored"
    second = flt.examine_line(pk.format("bob"), NOW)
    assert second.kind == "matched" and second.user == "bob"
    assert sorted(second.fields["users"]) == ["alice", "bob"]


def test_sshd_accepted_login_gains_and_forgets() -> None:
    flt = load_filter(stock_sshd(), "sshd", {})
    flt.examine_line("Jul  5 06:25:19 gw sshd[91]: Connection from 192.0.2.10 port 5 on 10.0.0.1 port 22", NOW)
    ok = flt.examine_line("Jul  5 06:25:20 gw sshd[91]: Accepted publickey for alice from 192.0.2.10 port 5 ssh2",
                          NOW)
    assert ok.kind == "ignored"
    assert "sshd[91]" not in str(list(flt.line_state.sessions))  # forgotten


def test_maxlines_buffer(tmp_path: Path) -> None:
    (tmp_path / "two.conf").write_text(
        "[Definition]\nmaxlines = 2\ndatepattern = {NONE}\n"
        "failregex = ^login by <F-USER>\\S+</F-USER>$\\n^denied for <HOST>$\n", encoding="utf-8")
    flt = load_filter(tmp_path, "two", {})
    assert flt.examine_line("login by eve", NOW).kind == "missed"
    v = flt.examine_line("denied for 192.0.2.11", NOW)
    assert v.kind == "matched" and v.host == "192.0.2.11" and v.user == "eve"
    # the matched lines left the buffer: the next line alone does not match again
    assert flt.examine_line("denied for 192.0.2.11", NOW).kind == "missed"


def test_session_table_is_bounded() -> None:
    flt = load_filter(stock_sshd(), "sshd", {})
    for pid in range(500):
        flt.examine_line(f"Jul  5 06:25:19 gw sshd[{pid}]: Connection from 192.0.2.1 port 5 on 10.0.0.1 port 22",
                         NOW)
    assert len(flt.line_state.sessions) <= 100
