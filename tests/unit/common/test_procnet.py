"""portsentinel.common.procnet: the /proc/net socket tables, on files made here (both stages read them so)."""

from __future__ import annotations

from pathlib import Path

from portsentinel.common import procnet

HEAD = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"


def test_ports_by_state_and_family(tmp_path: Path) -> None:
    (tmp_path / "tcp").write_text(HEAD + "   0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 0\n"
                                         "   1: 0100007F:1F90 0100007F:A1B2 01 00000000:00000000 00:00000000 0\n"
                                         "   2: garbage\n")
    (tmp_path / "tcp6").write_text(HEAD + "   0: 00000000000000000000000000000000:0050 "
                                          "00000000000000000000000000000000:0000 0A 0:0 0:0 0\n")
    assert procnet.ports("tcp", str(tmp_path), "0A") == {22, 80}
    assert procnet.ports("tcp", str(tmp_path)) == {22, 80, 8080}
    assert procnet.ports("udp", str(tmp_path)) == frozenset()  # no table: nothing, no error
