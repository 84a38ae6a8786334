"""``portsentinel fleet setup``, the planning half: names and addresses -> permissions and configuration text.

Pure (no I/O, no keys made here): the command line's ``--hosts`` and ``--servers`` are parsed into a
:class:`Plan`, and the plan renders each server's ``nats-server.conf``, the ``authorization`` block every server
includes, and each host's ``fleet.local``. Keys and certificates are made by :mod:`.pki`, files written by
:mod:`.setup_files`. Docs: docs/fleet.md ("Security", "Setting up the cluster").

The per-host permissions are the fleet contract's: a host publishes only under its own key prefix
(``$KV.<bucket>.<host>.>``), the JetStream API calls a KV putter and watcher make on the bucket's stream (stream
info, direct and message get; create, delete and info of ONE consumer, its own ``ps_watch_<host>``, so a
compromised host holds at most one consumer), flow-control and ack replies of that stream, and it subscribes only
to its own inbox prefix ``_INBOX_<host>.>``. Nothing creates, updates, deletes or purges a
stream, and nothing reads another host's inbox.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from .consumer import consumer_name
from .keys import valid_name

DEFAULT_BUCKET = "portsentinel_bans"
CLIENT_PORT = 4222
CLUSTER_PORT = 6222
SERVER_DIR = "/etc/nats-server"  # where a server's files go on the server (its nats-server.conf names them)
HOST_DIR = "/etc/portsentinel/fleet"  # where a host's seed and the CA go on the host (fleet.conf names them)
STORE_DIR = "/var/lib/nats/jetstream"
ADMIN = "admin"

_BUCKET = re.compile(r"[A-Za-z0-9_-]{1,64}", re.ASCII)


class SetupError(ValueError):
    """Bad input to the setup tool; the message names the argument (``--hosts: …``)."""


@dataclass(frozen=True)
class Server:
    name: str
    addr: str  # canonical IPv4 or IPv6 address

    def hostport(self, port: int) -> str:
        return f"[{self.addr}]:{port}" if ":" in self.addr else f"{self.addr}:{port}"


@dataclass(frozen=True)
class Permissions:
    publish: tuple[str, ...]
    subscribe: tuple[str, ...]


@dataclass(frozen=True)
class Plan:
    hosts: tuple[str, ...]
    servers: tuple[Server, ...]
    bucket: str = DEFAULT_BUCKET
    server_dir: str = SERVER_DIR  # "{name}" is replaced by the server's name
    host_dir: str = HOST_DIR  # "{name}" is replaced by the host's name
    store_dir: str = STORE_DIR  # "{name}" is replaced by the server's name
    cluster_name: str = "portsentinel"

    @property
    def stream(self) -> str:
        return f"KV_{self.bucket}"

    def urls(self) -> list[str]:
        return [f"tls://{s.hostport(CLIENT_PORT)}" for s in self.servers]


def parse_hosts(text: str, option: str = "--hosts") -> tuple[str, ...]:
    """``a,b,c`` -> the host names, in order; a bad or repeated name is an error naming ``option``."""
    names = [part.strip() for part in text.split(",")]
    if names == [""]:
        raise SetupError(f"{option}: no host names given (a,b,c)")
    seen: set[str] = set()
    for i, name in enumerate(names, start=1):
        if not valid_name(name):
            raise SetupError(f"{option}: host {i} {name[:70]!r} is not a host name "
                             "([A-Za-z0-9_-], 1 to 64 characters)")
        if name == ADMIN:
            raise SetupError(f"{option}: host {i} {name!r} is reserved for the admin credential")
        if name in seen:
            raise SetupError(f"{option}: host {name!r} is given twice")
        seen.add(name)
    return tuple(names)


def parse_servers(text: str, option: str = "--servers") -> tuple[Server, ...]:
    """``s1=10.0.0.1,s2=10.0.0.2,s3=2001:db8::3`` -> the servers; errors name ``option`` and the entry."""
    entries = [part.strip() for part in text.split(",")]
    if entries == [""]:
        raise SetupError(f"{option}: no servers given (s1=ADDR,s2=ADDR,s3=ADDR)")
    servers: list[Server] = []
    for i, entry in enumerate(entries, start=1):
        name, sep, addr_text = entry.partition("=")
        name, addr_text = name.strip(), addr_text.strip()
        if not sep:
            raise SetupError(f"{option}: server {i} {entry[:70]!r}: write NAME=ADDRESS")
        if not valid_name(name):
            raise SetupError(f"{option}: server {i} {name[:70]!r} is not a server name "
                             "([A-Za-z0-9_-], 1 to 64 characters)")
        try:
            addr = ipaddress.ip_address(addr_text)
        except ValueError:
            raise SetupError(f"{option}: server {name!r}: {addr_text[:70]!r} is not an IPv4 or IPv6 address "
                             "(names are not resolved: the certificates carry the addresses)") from None
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            raise SetupError(f"{option}: server {name!r}: write the IPv4 address, not {addr_text!r}")
        if addr.is_unspecified or addr.is_multicast:
            raise SetupError(f"{option}: server {name!r}: {addr_text!r} cannot be a server's address")
        if any(s.name == name for s in servers):
            raise SetupError(f"{option}: server {name!r} is given twice")
        if any(s.addr == str(addr) for s in servers):
            raise SetupError(f"{option}: address {addr} is given twice")
        servers.append(Server(name, str(addr)))
    return tuple(servers)


def parse_bucket(text: str, option: str = "--bucket") -> str:
    if not _BUCKET.fullmatch(text):
        raise SetupError(f"{option}: {text[:70]!r} is not a bucket name ([A-Za-z0-9_-], 1 to 64 characters)")
    return text


def host_permissions(host: str, bucket: str = DEFAULT_BUCKET) -> Permissions:
    """What a fleet host may publish and subscribe to (the fleet contract)."""
    if not valid_name(host):
        raise SetupError(f"bad host name {host[:70]!r}")
    stream = f"KV_{bucket}"
    api = "$JS.API"
    name = consumer_name(host)
    return Permissions(
        publish=(
            f"$KV.{bucket}.{host}.>",                      # its own keys: put, delete (a KV-Operation header)
            f"{api}.STREAM.INFO.{stream}",                 # bind to the bucket
            f"{api}.CONSUMER.CREATE.{stream}.{name}",      # its one consumer, by name (nats-server 2.9+) …
            f"{api}.CONSUMER.DELETE.{stream}.{name}",      # … dropped when the watch stops or restarts
            f"{api}.CONSUMER.INFO.{stream}.{name}",        # … its health and lag
            f"{api}.DIRECT.GET.{stream}",                  # get one key
            f"{api}.DIRECT.GET.{stream}.>",
            f"{api}.STREAM.MSG.GET.{stream}",
            f"$JS.FC.{stream}.>",                          # flow-control replies: a big watch stalls without
            f"$JS.ACK.{stream}.>",
        ),
        subscribe=(f"_INBOX_{host}.>",),                   # its own inbox prefix only
    )


def inbox_prefix(host: str) -> str:
    """The client inbox prefix a host must use (``_INBOX_<host>``): the only subjects it may subscribe to."""
    return f"_INBOX_{host}"


def _quote(text: str) -> str:
    if any(c in text for c in '"\\\n\r'):
        raise SetupError(f"cannot quote {text[:70]!r} in a nats-server configuration")
    return f'"{text}"'


def _list(items: tuple[str, ...] | list[str], indent: str) -> str:
    inner = "".join(f"{indent}  {_quote(item)}\n" for item in items)
    return f"[\n{inner}{indent}]"


def authorization_block(plan: Plan, host_keys: dict[str, str], admin_key: str) -> str:
    """The servers' ``authorization`` block: one nkey user per host with the contract's permissions, and the
    admin (creates the bucket; everything allowed). ``host_keys`` maps host -> its public nkey (``U…``)."""
    for host in plan.hosts:
        if host not in host_keys:
            raise SetupError(f"no public key for host {host!r}")
    for key in [*host_keys.values(), admin_key]:
        if not re.fullmatch(r"U[A-Z2-7]{55}", key):
            raise SetupError(f"{key[:70]!r} is not a user nkey (U…, 56 characters)")
    lines = ["# Made by `portsentinel fleet setup`: one nkey per fleet host, permissions per docs/fleet.md.",
             "authorization {", "  users: ["]
    for host in plan.hosts:
        perms = host_permissions(host, plan.bucket)
        lines += [
            f"    # host {host}",
            f"    {{ nkey: {_quote(host_keys[host])}",
            "      permissions: {",
            f"        publish: {{ allow: {_list(perms.publish, '        ')} }}",
            f"        subscribe: {{ allow: {_list(perms.subscribe, '        ')} }}",
            "      }",
            "    }",
        ]
    lines += [
        "    # the admin credential (bucket creation): keep it off the fleet hosts",
        f"    {{ nkey: {_quote(admin_key)} }}",
        "  ]",
        "}",
    ]
    return "\n".join(lines) + "\n"


def _tls_block(directory: str, indent: str, *, verify: bool) -> str:
    lines = [f"cert_file: {_quote(directory + '/server.pem')}", f"key_file: {_quote(directory + '/server.key')}",
             f"ca_file: {_quote(directory + '/ca.pem')}", "verify: true" if verify else "timeout: 5"]
    return "tls {\n" + "".join(f"{indent}  {line}\n" for line in lines) + f"{indent}}}"


def server_dir(plan: Plan, server: Server) -> str:
    """Where ``server``'s files go on it (``plan.server_dir``, ``{name}`` replaced by the server's name)."""
    return plan.server_dir.replace("{name}", server.name).rstrip("/")


def server_conf(plan: Plan, server: Server) -> str:
    """One server's ``nats-server.conf``: client TLS (a server certificate; clients prove who they are with their
    nkey), JetStream, mutual-TLS cluster routes to the other servers, and the authorization block, included from
    the same folder (nats-server resolves an include relative to the including file)."""
    d = server_dir(plan, server)
    routes = [f"nats-route://{s.hostport(CLUSTER_PORT)}" for s in plan.servers if s != server]
    cluster = ""
    if routes:
        cluster = (
            "cluster {\n"
            f"  name: {_quote(plan.cluster_name)}\n"
            f"  listen: {_quote(server.hostport(CLUSTER_PORT))}\n"
            f"  routes: {_list(routes, '  ')}\n"
            "  # routes authenticate both ways with certificates of the fleet's CA\n"
            f"  {_tls_block(d, '  ', verify=True)}\n"
            "}\n"
        )
    return (
        f"# {server.name}: made by `portsentinel fleet setup` (docs/fleet.md). Its folder goes to {d}/\n"
        f"# (owned by the nats-server's user, mode 0600); run nats-server -c {d}/nats-server.conf\n"
        f"server_name: {_quote(server.name)}\n"
        f"listen: {_quote(server.hostport(CLIENT_PORT))}\n"
        f"{_tls_block(d, '', verify=False)}\n"
        f"jetstream {{\n  store_dir: {_quote(plan.store_dir.replace('{name}', server.name))}\n}}\n"
        f"{cluster}"
        f"include {_quote('authorization.conf')}\n"
    )


def host_fleet_local(plan: Plan, host: str) -> str:
    """A host's ``/etc/portsentinel/fleet.local``: its name, the servers, its seed and the CA."""
    d = plan.host_dir.replace("{name}", host).rstrip("/")
    return (
        f"# {host}: made by `portsentinel fleet setup` (docs/fleet.md)\n"
        "[fleet]\n"
        "enabled = true\n"
        f"host = {host}\n"
        f"servers = {', '.join(plan.urls())}\n"
        f"nkey_seed = {d}/{host}.nk\n"
        f"ca = {d}/ca.pem\n"
        f"bucket = {plan.bucket}\n"
    )
