"""Coverage-guided fuzzing of every parser that reads outside input (issue 10 item 10). Not a test: run by hand.

    .venv/bin/python -m bench.fuzz all --runs 1000000            # every target, one process each, a table
    .venv/bin/python -m bench.fuzz packet -runs=100000           # one target, libFuzzer flags passed on

Targets (each takes the fuzzer's bytes; anything but the documented error is a crash):

    record     portsentinel.record.from_json_line and validate (the record validator)
    address    portsentinel.record.canonical_address (ban addresses: plain IPv4/IPv6, nothing else)
    inifile    portsentinel.responder.config.inifile.parse_text + merge + interpolation (the layered INI reader)
    portsentry portsentinel.detector.config.portsentry_conf.parse_portsentry_text (a classic portsentry.conf)
    packet     portsentinel.detector.packet.parse and parse_tuple (IPv4/IPv6, extension headers, fragments)
    fragments  a stream of fuzzer-built IPv4/IPv6 fragments into portsentinel.detector.reassembly.Reassembler
    render     the shipped actions.d/*.conf rendered with hostile ban variables (portsentinel.responder.actions.render)

Besides "no exception but the documented one", each target checks an invariant: a canonical address is
plain text that parses back to itself; a rendered action has as many words as with a benign address and no
NUL byte; parse and parse_tuple agree. Uses atheris (installed into the running interpreter when missing).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

TARGETS = ("record", "address", "inifile", "portsentry", "packet", "fragments", "render")


def _atheris():  # type: ignore[no-untyped-def]
    try:
        import atheris
    except ImportError:
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--only-binary", ":all:", "atheris"],
                       check=True)
        import atheris
    return atheris


# ---------------------------------------------------------------------------------------------- targets
_PLAIN = re.compile(r"[0-9a-f.:]{2,39}\Z")


def _check_canonical(out: str) -> None:
    import ipaddress

    assert _PLAIN.match(out), out
    addr = ipaddress.ip_address(out)
    assert str(addr) == out, out
    assert not (isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None), out


def target_address(data: bytes) -> None:
    from portsentinel import record as psrecord

    text = data.decode("utf-8", "surrogateescape")
    try:
        out = psrecord.canonical_address(text)
    except ValueError:
        return
    _check_canonical(out)
    assert psrecord.canonical_address(out) == out


def target_record(data: bytes, fdp_cls: object = None) -> None:
    from portsentinel import record as psrecord

    text = data.decode("utf-8", "replace")
    try:
        rec = psrecord.from_json_line(text)
    except psrecord.RecordError:
        rec = None
    if rec is not None:
        for name in psrecord.ADDR_FIELDS:
            if name in rec.fields:
                _check_canonical(rec.fields[name])
        assert psrecord.from_json_line(psrecord.to_json_line(rec)) == rec
    # The same bytes as a flat field mapping (what the journal gives): NAME=value lines.
    fields: dict[str, object] = {}
    for line in text.split("\n")[:80]:
        name, _, value = line.partition("=")
        fields[name] = int(value) if value.isdigit() and len(value) < 30 else value
    try:
        psrecord.validate(fields, allow_trusted=bool(data[:1] == b"T"))
    except psrecord.RecordError:
        pass


def target_inifile(data: bytes) -> None:
    from pathlib import Path as P

    from portsentinel.responder.config.inifile import IniError, merge, parse_text

    text = data.decode("utf-8", "replace")
    halves = text.split("\x00", 1)
    parsed = []
    try:
        for i, part in enumerate(halves):
            parsed.append((P(f"f{i}.conf"), parse_text(part, f"f{i}.conf")))
    except IniError:
        return
    ini = merge(parsed)
    for section, opts in list(ini.sections.items())[:20]:
        for key in list(opts)[:20]:
            try:
                ini.get(section, key, vars={"__name__": section})
            except IniError:
                pass


def target_portsentry(data: bytes) -> None:
    from portsentinel.detector.config.model import ConfigError
    from portsentinel.detector.config.portsentry_conf import parse_portsentry_text

    try:
        parse_portsentry_text(data.decode("utf-8", "replace"), "portsentry.conf")
    except ConfigError:
        pass


def target_packet(data: bytes) -> None:
    from portsentinel.detector.packet import Bad, Probe, parse, parse_tuple

    out = parse(data)
    assert isinstance(out, (Probe, Bad))
    if len(data) > 3:
        inner = parse(data, 2, len(data) - 3)
        assert isinstance(inner, (Probe, Bad))
    tup = parse_tuple(data)
    if isinstance(out, Probe):
        assert tup is not None and tuple(tup)[:5] == tuple(out)[:5], (tup, out)


def _csum(data: bytes) -> int:
    total = sum(int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data) - 1, 2))
    if len(data) % 2:
        total += data[-1] << 8
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _datagram(fdp: object) -> list[bytes]:
    """A whole datagram cut at 8-byte boundaries into fragments, in the order the fuzzer picks."""
    take = fdp.ConsumeIntInRange  # type: ignore[attr-defined]
    v6, ident, proto, host = take(0, 1) == 1, take(0, 3), (6, 17)[take(0, 1)], take(1, 3)
    payload = bytearray(fdp.ConsumeBytes(take(20, 120)))  # type: ignore[attr-defined]
    payload += bytes(20 - min(20, len(payload)))
    src, dst = _addrs(v6, host)
    if take(0, 7):  # a correct transport checksum, mostly (the reassembler drops a datagram with a bad one)
        at = 16 if proto == 6 else 6
        if proto == 17:
            payload[4:6] = len(payload).to_bytes(2, "big")
        payload[at:at + 2] = b"\0\0"
        pseudo = (src + dst + (len(payload).to_bytes(4, "big") + bytes(3) + bytes([proto]) if v6
                               else bytes([0, proto]) + len(payload).to_bytes(2, "big")))
        payload[at:at + 2] = _csum(pseudo + bytes(payload)).to_bytes(2, "big")
    payload = bytes(payload)
    cuts = sorted({8 * take(1, max(1, len(payload) // 8)) for _ in range(take(1, 3))} - {len(payload)})
    bounds = [0, *[c for c in cuts if c < len(payload)], len(payload)]
    frags = [_fragment(fdp, v6=v6, host=host, ident=ident, proto=proto, offset=a // 8, more=int(b < len(payload)),
                       payload=payload[a:b]) for a, b in zip(bounds, bounds[1:], strict=False)]
    if take(0, 1):
        frags.reverse()
    return frags


def _addrs(v6: bool, host: int) -> tuple[bytes, bytes]:
    return (bytes(15) + bytes([host]), bytes(15) + b"\x09") if v6 else (bytes([10, 0, 0, host]), bytes([10, 0, 0, 9]))


def _fragment(fdp: object, *, v6: bool | None = None, host: int | None = None, ident: int | None = None,
              proto: int | None = None, offset: int | None = None, more: int | None = None,
              payload: bytes | None = None) -> bytes:
    """One IPv4 fragment or IPv6 packet with a fragment header, its fields and payload chosen by the fuzzer."""
    import struct

    take = fdp.ConsumeIntInRange  # type: ignore[attr-defined]
    v6 = take(0, 1) == 1 if v6 is None else v6
    src, dst = _addrs(v6, take(1, 3) if host is None else host)
    ident = take(0, 3) if ident is None else ident
    offset = take(0, 64) if offset is None else offset
    more = take(0, 1) if more is None else more
    proto = (6, 17, 1, take(0, 255))[take(0, 3)] if proto is None else proto
    payload = fdp.ConsumeBytes(take(0, 96)) if payload is None else payload  # type: ignore[attr-defined]
    if v6:
        hdr = struct.pack("!IHBB16s16s", 0x60000000 | (take(0, 3) << 20), 8 + len(payload), 44, 64, src, dst)
        return hdr + struct.pack("!BBHI", proto, 0, (offset << 3) | more, ident) + payload
    hdr = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, take(0, 3), 20 + len(payload), ident,
                                (more << 13) | offset | (take(0, 1) << 14), 64, proto, 0, src, dst))
    if take(0, 15):  # a correct header checksum, mostly
        hdr[10:12] = _csum(bytes(hdr)).to_bytes(2, "big")
    return bytes(hdr) + payload


def target_fragments(data: bytes) -> None:
    """A stream of fragments into one bounded Reassembler; every datagram it completes must parse."""
    import atheris

    from portsentinel.detector.packet import Bad, Probe, parse
    from portsentinel.detector.reassembly import Reassembler

    fdp = atheris.FuzzedDataProvider(data)
    r = Reassembler(max_entries=8, max_bytes=4096, max_runs=8, max_dist=4, timeout4=30, timeout6=60)
    now = 0.0
    while fdp.remaining_bytes() > 4:
        now += fdp.ConsumeIntInRange(0, 40) / 2
        kind = fdp.ConsumeIntInRange(0, 7)
        frags = (_datagram(fdp) if kind < 4 else [_fragment(fdp)] if kind < 7
                 else [fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 80))])
        for frag in frags:
            out = r.feed(frag, 0, None, now)
            if out is not None:
                assert isinstance(parse(out), (Probe, Bad))
        assert len(r) <= 16 and r.bytes <= 4096 + 2048, (len(r), r.bytes)


_ACTIONS: list[object] = []
_BENIGN: dict[str, int] = {}


def _argvs(action: object, ban: dict[str, object]) -> list[list[str]]:
    """The commands of an action's actionban for ``ban`` (variables by name), never the batched form."""
    from portsentinel.responder.actions.action import Action, Steps
    from portsentinel.responder.actions.variables import BanVars

    assert isinstance(action, Action)
    plan = action.plan("actionban", BanVars.parse(ban), batch=False)
    assert isinstance(plan, Steps)
    return [step.argv for step in plan.steps]


def _actions() -> list[object]:
    if not _ACTIONS:
        from portsentinel.responder.actions.action import load_action

        for path in sorted((ROOT / "actions.d").glob("*.conf")):
            args = {"file": "/tmp/hosts.deny.fuzz"} if path.stem == "hosts-deny" else {}
            action = load_action(ROOT / "actions.d", (path.stem, args), "fuzzjail")
            _ACTIONS.append(action)
            for ip in ("192.0.2.1", "2001:db8::1"):
                _BENIGN[f"{path.stem}/{ip}"] = sum(len(a) for a in _argvs(action, {"ip": ip, "bantime": 60}))
    return _ACTIONS


def target_render(data: bytes) -> None:
    from portsentinel.responder.actions.action import ActionError
    from portsentinel.responder.actions.render import RenderError
    from portsentinel.responder.actions.variables import VarError

    text = data.decode("utf-8", "surrogateescape")
    parts = (text.split("\x01") + ["", "", "", ""])[:5]
    ban: dict[str, object] = {"ip": parts[0], "port": parts[1], "proto": parts[2], "matches": parts[3],
                              "bantime": parts[4] if parts[4] else 60}
    for action in _actions():
        try:
            argvs = _argvs(action, ban)
        except (ActionError, RenderError, VarError):
            continue  # refused: the documented outcome for a hostile value
        family_ip = "2001:db8::1" if ":" in str(ban["ip"]).strip("[]") and "." not in str(ban["ip"]) else None
        words = sum(len(a) for a in argvs)
        for argv in argvs:
            for w in argv:
                assert "\x00" not in w, argv
        if family_ip is not None or words:
            names = (f"{action.name}/192.0.2.1", f"{action.name}/2001:db8::1")  # type: ignore[attr-defined]
            assert words in (_BENIGN[names[0]], _BENIGN[names[1]]) or not argvs, (argvs, ban)


FUNCS = {"record": target_record, "address": target_address, "inifile": target_inifile,
         "portsentry": target_portsentry, "packet": target_packet, "fragments": target_fragments,
         "render": target_render}

SEEDS: dict[str, list[bytes]] = {
    "address": [b"192.0.2.1", b"2001:db8::1", b"fe80::1%eth0", b"::ffff:127.0.0.1", b"1.2.3.4\n",
                b"fe80::1%x]\nALL: ALL\n#", b"10.0.0.0/8", b"::"],
    "record": [json.dumps({"MESSAGE": "attackalert: x", "PS_SRC": "192.0.2.7", "PS_PORT": 22,
                           "PS_EVENT": "scan"}).encode(), b"MESSAGE=x\nPS_SRC=::ffff:1.2.3.4\nPS_PORT=80"],
    "inifile": [(ROOT / "jail.conf").read_bytes(), (ROOT / "filter.d" / "sshd.conf").read_bytes(),
                (ROOT / "actions.d" / "nftables.conf").read_bytes()],
    "portsentry": [b'TCP_PORTS="1,11,15"\nUDP_PORTS="1,7"\nBLOCK_TCP="1"\nKILL_ROUTE="/sbin/route add $TARGET$"\n'],
    "packet": [bytes.fromhex("450000280001000040067ccd0a0000010a00000204d20016000000000000000050022000917c0000"),
               bytes.fromhex("6000000000140640" + "20010db8" + "00" * 11 + "01" + "20010db8" + "00" * 11 + "02"
                             + "04d2001600000000000000005002200000000000")],
    "render": [b"192.0.2.9\x0122\x01tcp\x01line\x0160", b"fe80::1%x]\nALL: ALL\n#\x01\x01\x01\x01",
               b"::ffff:127.0.0.1\x01-1\x01TCP\x01$(reboot)\x01-5"],
}


# ---------------------------------------------------------------------------------------------- running
def run_one(name: str, argv: list[str]) -> None:
    atheris = _atheris()
    func = FUNCS[name]
    with atheris.instrument_imports():
        import portsentinel.detector.config.portsentry_conf  # noqa: F401
        import portsentinel.detector.packet  # noqa: F401
        import portsentinel.detector.reassembly  # noqa: F401
        import portsentinel.record  # noqa: F401
        import portsentinel.responder.actions.action  # noqa: F401
        import portsentinel.responder.actions.render  # noqa: F401
        import portsentinel.responder.config.inifile  # noqa: F401
    corpus = Path(os.environ.get("FUZZ_CORPUS", "/tmp/portsentinel-fuzz")) / name
    corpus.mkdir(parents=True, exist_ok=True)
    for i, seed in enumerate(SEEDS.get(name, [])):
        (corpus / f"seed{i}").write_bytes(seed)
    if name == "render":
        _actions()
    atheris.Setup([sys.argv[0], *argv, str(corpus)], func)
    atheris.Fuzz()


def run_all(runs: int, only: list[str]) -> int:
    print(f"fuzz: {runs:,} inputs per target, python {sys.version.split()[0]}, "
          f"{os.cpu_count()} cpu(s), {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(f"{'target':<11} {'inputs':>11} {'seconds':>8} {'inputs/s':>9} {'crashes':>8}")
    failed = 0
    for name in only:
        crashdir = Path(os.environ.get("FUZZ_CORPUS", "/tmp/portsentinel-fuzz")) / f"crashes-{name}"
        crashdir.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "bench.fuzz", name, f"-runs={runs}",
                               f"-artifact_prefix={crashdir}/", "-print_final_stats=1", "-max_len=4096",
                               "-rss_limit_mb=4096"],
                              capture_output=True, text=True, cwd=ROOT)
        secs = time.monotonic() - t0
        done = re.search(r"Done (\d+) runs", proc.stderr)
        execs = int(done.group(1)) if done else 0
        crashes = 0 if proc.returncode == 0 else 1
        failed += crashes
        print(f"{name:<11} {execs:>11,} {secs:>8.0f} {execs / secs if secs else 0:>9,.0f} {crashes:>8}", flush=True)
        if crashes:
            print("\n".join(proc.stderr.splitlines()[-40:]))
    return 1 if failed else 0


def main() -> int:
    if len(sys.argv) >= 2 and sys.argv[1] == "all":
        runs = 1_000_000
        only = list(TARGETS)
        args = sys.argv[2:]
        while args:
            a = args.pop(0)
            if a == "--runs":
                runs = int(args.pop(0))
            elif a == "--only":
                only = args.pop(0).split(",")
        return run_all(runs, only)
    if len(sys.argv) >= 2 and sys.argv[1] in FUNCS:
        run_one(sys.argv[1], sys.argv[2:])
        return 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main())
