"""Coverage-guided fuzzing of every parser that reads outside input (issue 10 item 10). Not a test: run by hand.

    .venv/bin/python -m bench.fuzz all --runs 1000000            # every target, one process each, a table
    .venv/bin/python -m bench.fuzz packet -runs=100000           # one target, libFuzzer flags passed on

Targets (each takes the fuzzer's bytes; anything but the documented error is a crash):

    record     portsentinel.record.from_json_line and validate (the record validator)
    address    portsentinel.record.canonical_address (ban addresses: plain IPv4/IPv6, nothing else)
    inifile    portsentinel.responder.inifile.parse_text + merge + interpolation of every key (the layered INI reader)
    portsentry portsentinel.detector.portsentry_conf.parse_portsentry_text (a classic portsentry.conf)
    packet     portsentinel.detector.packet.parse and parse_tuple (IPv4/IPv6, extension headers, fragments)
    render     the shipped actions.d/*.conf rendered with hostile ban variables (portsentinel.responder.render)

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

TARGETS = ("record", "address", "inifile", "portsentry", "packet", "render")


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

    from portsentinel.responder.inifile import IniError, merge, parse_text

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
    from portsentinel.detector.portsentry_conf import parse_portsentry_text
    from portsentinel.detector.settings import ConfigError

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


_ACTIONS: list[object] = []
_BENIGN: dict[str, int] = {}


def _actions() -> list[object]:
    if not _ACTIONS:
        from portsentinel.responder.actions import load_action

        for path in sorted((ROOT / "actions.d").glob("*.conf")):
            args = {"file": "/tmp/hosts.deny.fuzz"} if path.stem == "hosts-deny" else {}
            action = load_action(ROOT / "actions.d", (path.stem, args), "fuzzjail")
            _ACTIONS.append(action)
            for ip in ("192.0.2.1", "2001:db8::1"):
                _BENIGN[f"{path.stem}/{ip}"] = sum(len(a) for a in action.argv("actionban", {"ip": ip, "bantime": 60}))  # type: ignore[attr-defined]
    return _ACTIONS


def target_render(data: bytes) -> None:
    from portsentinel.responder.actions import ActionError
    from portsentinel.responder.render import RenderError

    text = data.decode("utf-8", "surrogateescape")
    parts = (text.split("\x01") + ["", "", "", ""])[:5]
    ban: dict[str, object] = {"ip": parts[0], "port": parts[1], "proto": parts[2], "matches": parts[3],
                              "bantime": parts[4] if parts[4] else 60}
    for action in _actions():
        try:
            argvs = action.argv("actionban", ban)  # type: ignore[attr-defined]
        except (ActionError, RenderError):
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
         "portsentry": target_portsentry, "packet": target_packet, "render": target_render}

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
        import portsentinel.detector.packet  # noqa: F401
        import portsentinel.detector.portsentry_conf  # noqa: F401
        import portsentinel.record  # noqa: F401
        import portsentinel.responder.actions  # noqa: F401
        import portsentinel.responder.inifile  # noqa: F401
        import portsentinel.responder.render  # noqa: F401
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
