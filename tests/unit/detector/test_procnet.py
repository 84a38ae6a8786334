"""The detector's view of this host's sockets: sock_diag agrees with /proc, listeners vs connected."""

from __future__ import annotations

import socket
from pathlib import Path

from portsentinel.detector.adapters import procnet


def test_listeners_and_connected_ports() -> None:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    lport = srv.getsockname()[1]
    cli = socket.create_connection(("127.0.0.1", lport))
    conn, _ = srv.accept()
    cport = cli.getsockname()[1]
    try:
        full = procnet.ports_in_use("tcp")
        listening = procnet.ports_in_use("tcp", listening_only=True)
        assert lport in full and cport in full
        assert lport in listening and cport not in listening
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("127.0.0.1", 0))
        assert udp.getsockname()[1] in procnet.ports_in_use("udp")
        udp.close()
    finally:
        conn.close()
        cli.close()
        srv.close()


def test_proc_fallback_reads_the_same() -> None:
    srv = socket.socket(socket.AF_INET6)
    srv.bind(("::1", 0))
    srv.listen(1)
    try:
        port = srv.getsockname()[1]
        assert port in procnet.ports_in_use("tcp", root="/proc/net")
        assert port in procnet.ports_in_use("tcp")
    finally:
        srv.close()


def test_fragment_sysctls(tmp_path: Path) -> None:
    """The host's reassembly timeouts and max_dist; what cannot be read keeps the reassembler's default."""
    (tmp_path / "ipv4").mkdir()
    (tmp_path / "ipv6").mkdir()
    (tmp_path / "ipv4" / "ipfrag_time").write_text("17\n")
    (tmp_path / "ipv4" / "ipfrag_max_dist").write_text("0\n")
    (tmp_path / "ipv6" / "ip6frag_time").write_text("bogus\n")
    assert procnet.fragment_sysctls(str(tmp_path)) == {"timeout4": 17, "max_dist": 0}
    assert procnet.fragment_sysctls(str(tmp_path / "missing")) == {}
    live = procnet.fragment_sysctls()  # this network namespace's own
    assert set(live) <= {"timeout4", "timeout6", "max_dist"} and all(v >= 0 for v in live.values())
