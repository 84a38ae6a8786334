"""portsentinel fleet setup: planning (names -> permissions and configuration text) and the files it writes."""

from __future__ import annotations

import datetime as dt
import json
import stat
from pathlib import Path

import pytest

from portsentinel.fleet import pki
from portsentinel.fleet import setup as S
from portsentinel.fleet.setup_files import read_summary, write_setup

NOW = dt.datetime(2026, 11, 30, 8, 0, tzinfo=dt.UTC)
KEY = {h: "U" + c * 55 for h, c in (("a", "A"), ("b", "B"), ("c", "C"))}
ADMIN = "U" + "D" * 55


def plan(**kw: str) -> S.Plan:
    return S.Plan(S.parse_hosts("a,b,c"), S.parse_servers("s1=10.0.0.1,s2=10.0.0.2,s3=2001:db8::3"), **kw)


@pytest.mark.parametrize(("text", "message"), [
    ("", "--hosts: no host names"),
    ("a,,b", "--hosts: host 2 ''"),
    ("a,b.c", "--hosts: host 2 'b.c' is not a host name"),
    ("a,b>", "--hosts: host 2 'b>' is not a host name"),
    ("a," + "x" * 65, "--hosts: host 2"),
    ("a,b,a", "--hosts: host 'a' is given twice"),
    ("admin", "reserved for the admin"),
    ("a,b c", "host 2 'b c'"),
])
def test_bad_hosts_name_the_argument_and_the_entry(text: str, message: str) -> None:
    with pytest.raises(S.SetupError, match=message.replace("(", r"\(").replace(">", ">")):
        S.parse_hosts(text)


@pytest.mark.parametrize(("text", "message"), [
    ("s1", r"--servers: server 1 's1': write NAME=ADDRESS"),
    ("s1=nats.example", r"--servers: server 's1': 'nats.example' is not an IPv4 or IPv6 address"),
    ("s1=10.0.0.1,s1=10.0.0.2", r"server 's1' is given twice"),
    ("s1=10.0.0.1,s2=10.0.0.1", r"address 10.0.0.1 is given twice"),
    ("s.1=10.0.0.1", r"server 1 's.1' is not a server name"),
    ("s1=0.0.0.0", r"cannot be a server's address"),
    ("s1=::ffff:10.0.0.1", r"write the IPv4 address"),
])
def test_bad_servers_name_the_argument_and_the_entry(text: str, message: str) -> None:
    with pytest.raises(S.SetupError, match=message):
        S.parse_servers(text)


def test_servers_are_canonical_and_urls_bracket_ipv6() -> None:
    servers = S.parse_servers(" s1 = 10.0.0.1 , s2=2001:DB8:0::3")
    assert servers == (S.Server("s1", "10.0.0.1"), S.Server("s2", "2001:db8::3"))
    assert S.Plan(("a",), servers).urls() == ["tls://10.0.0.1:4222", "tls://[2001:db8::3]:4222"]


def test_host_permissions_are_the_contracts() -> None:
    perms = S.host_permissions("a")
    assert perms.subscribe == ("_INBOX_a.>",)
    assert "$KV.portsentinel_bans.a.>" in perms.publish
    assert "$JS.FC.KV_portsentinel_bans.>" in perms.publish
    assert "$JS.ACK.KV_portsentinel_bans.>" in perms.publish
    # nothing of another host's keys, no wildcard over the bucket, no stream management
    for subject in perms.publish:
        assert not subject.startswith("$KV.portsentinel_bans.>") and ".b." not in subject
        for verb in ("STREAM.CREATE", "STREAM.UPDATE", "STREAM.DELETE", "STREAM.PURGE", "STREAM.MSG.DELETE",
                     "_INBOX"):
            assert verb not in subject
        assert subject.endswith(("KV_portsentinel_bans", "KV_portsentinel_bans.>", "KV_portsentinel_bans.ps_watch_a",
                                 "portsentinel_bans.a.>"))
    # one consumer, by name: create, delete and info of ps_watch_a only (no unnamed create, no wildcard name)
    consumer = sorted(s for s in perms.publish if ".CONSUMER." in s)
    assert consumer == [f"$JS.API.CONSUMER.{verb}.KV_portsentinel_bans.ps_watch_a"
                        for verb in ("CREATE", "DELETE", "INFO")]
    assert S.inbox_prefix("a") == "_INBOX_a"


def test_authorization_block_lists_each_host_with_its_own_permissions() -> None:
    text = S.authorization_block(plan(), KEY, ADMIN)
    blocks = text.split("# host ")[1:]
    assert [b.split("\n", 1)[0] for b in blocks] == ["a", "b", "c"]
    for host, block in zip("abc", blocks, strict=True):
        assert f'nkey: "{KEY[host]}"' in block
        assert f'"$KV.portsentinel_bans.{host}.>"' in block
        assert f'"_INBOX_{host}.>"' in block
        others = set("abc") - {host}
        assert not any(f"$KV.portsentinel_bans.{o}.>" in block.split("# the admin")[0] for o in others)
    assert f'{{ nkey: "{ADMIN}" }}' in text
    assert text.count("{") == text.count("}")


def test_authorization_block_refuses_a_missing_or_bad_key() -> None:
    with pytest.raises(S.SetupError, match="no public key for host 'c'"):
        S.authorization_block(plan(), {"a": KEY["a"], "b": KEY["b"]}, ADMIN)
    with pytest.raises(S.SetupError, match="not a user nkey"):
        S.authorization_block(plan(), {**KEY, "c": "SUAAAA"}, ADMIN)


def test_server_conf_routes_to_the_others_with_mutual_tls() -> None:
    p = plan(server_dir="/srv/{name}", store_dir="/data/{name}")
    text = S.server_conf(p, p.servers[0])
    assert 'server_name: "s1"' in text and 'listen: "10.0.0.1:4222"' in text
    assert '"nats-route://10.0.0.2:6222"' in text and '"nats-route://[2001:db8::3]:6222"' in text
    assert "10.0.0.1:6222\"\n  routes" in text and "nats-route://10.0.0.1" not in text
    assert text.count('cert_file: "/srv/s1/server.pem"') == 2 and "verify: true" in text
    assert 'store_dir: "/data/s1"' in text and text.rstrip().endswith('include "authorization.conf"')


def test_single_server_has_no_cluster_block() -> None:
    p = S.Plan(("a",), S.parse_servers("s1=10.0.0.1"))
    assert "cluster" not in S.server_conf(p, p.servers[0])


def test_host_fleet_local_names_the_host_its_seed_and_the_servers() -> None:
    text = S.host_fleet_local(plan(bucket="bans"), "b")
    assert "[fleet]\n" in text and "host = b\n" in text and "nkey_seed = /etc/portsentinel/fleet/b.nk\n" in text
    assert "servers = tls://10.0.0.1:4222, tls://10.0.0.2:4222, tls://[2001:db8::3]:4222\n" in text
    assert "bucket = bans\n" in text


def test_bucket_names() -> None:
    assert S.parse_bucket("portsentinel_bans") == "portsentinel_bans"
    with pytest.raises(S.SetupError, match="--bucket: 'a.b' is not a bucket name"):
        S.parse_bucket("a.b")


def _modes(root: Path) -> set[int]:
    return {stat.S_IMODE(p.stat().st_mode) for p in root.rglob("*")} | {stat.S_IMODE(root.stat().st_mode)}


def test_write_setup_makes_private_files_and_keeps_keys_on_a_second_run(tmp_path: Path) -> None:
    out = tmp_path / "fleet"
    first = write_setup(plan(), out, NOW)
    assert _modes(out) == {0o600, 0o700}
    seed_a = (out / "hosts/a/a.nk").read_bytes()
    assert seed_a.startswith(b"SU")
    public_a = pki.user_public_key(seed_a)
    auth = (out / "servers/s2/authorization.conf").read_text()
    assert public_a in auth and pki.user_public_key((out / "admin.nk").read_bytes()) in auth
    cert = (out / "servers/s3/server.pem").read_bytes()
    assert pki.signed_by(cert, (out / "ca.pem").read_bytes())
    assert pki.cert_names(cert) == ({"s3"}, {"2001:db8::3"})
    assert read_summary(out).urls == plan().urls()
    assert json.loads((out / "setup.json").read_text())["hosts"] == ["a", "b", "c"]
    assert len(first.written) == 28

    bigger = S.Plan(("a", "b", "c", "d"), plan().servers)
    second = write_setup(bigger, out, NOW + dt.timedelta(days=1))
    assert (out / "hosts/a/a.nk").read_bytes() == seed_a  # not re-keyed
    assert (out / "servers/s3/server.pem").read_bytes() == cert
    assert out / "hosts/d/d.nk" in second.written and out / "ca.key" in second.kept
    public_d = pki.user_public_key((out / "hosts/d/d.nk").read_bytes())
    assert public_d in (out / "servers/s1/authorization.conf").read_text()
    # a server that moved gets a new certificate for its new address
    moved = S.Plan(bigger.hosts, S.parse_servers("s1=10.0.0.1,s2=10.0.0.2,s3=10.0.0.33"))
    write_setup(moved, out, NOW)
    assert pki.cert_names((out / "servers/s3/server.pem").read_bytes()) == ({"s3"}, {"10.0.0.33"})


def test_write_setup_refuses_a_broken_seed_or_half_a_ca(tmp_path: Path) -> None:
    out = tmp_path / "fleet"
    write_setup(plan(), out, NOW)
    (out / "hosts/b/b.nk").write_text("not a seed\n")
    with pytest.raises(S.SetupError, match=r"hosts/b/b.nk: not an nkey seed"):
        write_setup(plan(), out, NOW)
    (out / "ca.key").unlink()
    with pytest.raises(S.SetupError, match="ca.key and ca.pem must both exist"):
        write_setup(plan(), out, NOW)


def test_read_summary_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(S.SetupError, match=r"setup.json: missing"):
        read_summary(tmp_path)
    (tmp_path / "setup.json").write_text('{"urls": 3}')
    with pytest.raises(S.SetupError, match=r"setup.json: not written by portsentinel fleet setup"):
        read_summary(tmp_path)
