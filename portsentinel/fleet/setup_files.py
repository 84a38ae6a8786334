"""``portsentinel fleet setup``, the writing half: a :class:`~.setup.Plan` -> the files under ``--out DIR``.

::

    DIR/ca.pem, DIR/ca.key            the fleet's CA (keep ca.key off the servers and hosts)
    DIR/admin.nk                      the admin seed (creates the bucket: --create-bucket)
    DIR/servers/<s>/                  nats-server.conf, authorization.conf, server.pem, server.key, ca.pem
    DIR/hosts/<h>/                    <h>.nk (the host's seed), ca.pem, fleet.local
    DIR/setup.json                    what was planned (servers, hosts, bucket), read by --create-bucket

Every file is written atomically with mode 0600, every folder 0700. Running the command again keeps what exists
(the CA, the admin seed, each host's seed, a server certificate still valid for its name and address) and
rewrites the configuration: adding a host to ``--hosts`` gives it a seed without re-keying the others, and a
host left out loses its permissions at the servers' next reload.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from . import pki
from .setup import ADMIN, Plan, SetupError, authorization_block, host_fleet_local, server_conf


@dataclass
class Written:
    """What a run wrote and what it kept."""

    written: list[Path] = field(default_factory=list)
    kept: list[Path] = field(default_factory=list)


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, mode 0600 (a temporary file beside it, fsync, rename)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _folder(path: Path) -> Path:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _seed(path: Path, done: Written) -> str:
    """The public key of the seed at ``path``, made when missing."""
    old = _read(path)
    if old is not None:
        try:
            public = pki.user_public_key(old)
        except ValueError as exc:
            raise SetupError(f"{path}: {exc}; remove it to make a new one") from None
        done.kept.append(path)
        return public
    seed = pki.new_user_seed()
    write_private(path, seed + b"\n")
    done.written.append(path)
    return pki.user_public_key(seed)


def _put(path: Path, data: bytes, done: Written) -> None:
    write_private(path, data)
    done.written.append(path)


def write_setup(plan: Plan, out: Path, now: dt.datetime | None = None) -> Written:
    """Make or refresh everything ``plan`` needs under ``out``."""
    now = now or dt.datetime.now(dt.UTC)
    done = Written()
    _folder(out)
    ca_key, ca_cert = _read(out / "ca.key"), _read(out / "ca.pem")
    if ca_key is not None and ca_cert is not None:
        ca = pki.KeyCert(ca_key, ca_cert)
        done.kept += [out / "ca.key", out / "ca.pem"]
    elif ca_key is None and ca_cert is None:
        ca = pki.make_ca(now)
        _put(out / "ca.key", ca.key_pem, done)
        _put(out / "ca.pem", ca.cert_pem, done)
    else:
        raise SetupError(f"{out}: ca.key and ca.pem must both exist or both be missing")
    admin_key = _seed(out / f"{ADMIN}.nk", done)
    host_keys: dict[str, str] = {}
    for host in plan.hosts:
        folder = _folder(_folder(out / "hosts") / host)
        host_keys[host] = _seed(folder / f"{host}.nk", done)
        _put(folder / "ca.pem", ca.cert_pem, done)
        _put(folder / "fleet.local", host_fleet_local(plan, host).encode(), done)
    auth = authorization_block(plan, host_keys, admin_key).encode()
    for server in plan.servers:
        folder = _folder(_folder(out / "servers") / server.name)
        cert = _read(folder / "server.pem")
        if (cert is not None and (folder / "server.key").exists() and pki.signed_by(cert, ca.cert_pem)
                and pki.cert_names(cert) == ({server.name}, {server.addr})
                and pki.cert_expiry(cert) > now + dt.timedelta(days=30)):
            done.kept += [folder / "server.key", folder / "server.pem"]
        else:
            made = pki.make_server_cert(ca, server.name, server.addr, now)
            _put(folder / "server.key", made.key_pem, done)
            _put(folder / "server.pem", made.cert_pem, done)
        _put(folder / "ca.pem", ca.cert_pem, done)
        _put(folder / "authorization.conf", auth, done)
        _put(folder / "nats-server.conf", server_conf(plan, server).encode(), done)
    summary = {"bucket": plan.bucket, "hosts": list(plan.hosts),
               "servers": {s.name: s.addr for s in plan.servers}, "urls": plan.urls()}
    _put(out / "setup.json", (json.dumps(summary, indent=2) + "\n").encode(), done)
    return done


@dataclass(frozen=True)
class Summary:
    bucket: str
    hosts: tuple[str, ...]
    urls: list[str]


def read_summary(out: Path) -> Summary:
    """``DIR/setup.json`` as written by :func:`write_setup`; SetupError naming the file when missing or bad."""
    path = out / "setup.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise SetupError(f"{path}: missing (run portsentinel fleet setup --hosts … --servers … --out {out})") from None
    except (OSError, ValueError) as exc:
        raise SetupError(f"{path}: {exc}") from None
    try:
        urls, hosts, bucket = data["urls"], data["hosts"], data["bucket"]
        if not (isinstance(bucket, str) and all(isinstance(u, str) for u in urls)
                and all(isinstance(h, str) for h in hosts) and urls):
            raise TypeError
    except (KeyError, TypeError):
        raise SetupError(f"{path}: not written by portsentinel fleet setup") from None
    return Summary(bucket, tuple(hosts), list(urls))
