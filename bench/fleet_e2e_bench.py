"""The fleet's speed end to end (issue 13, "Speed"), on real hosts of the lab (tests/lab/fleethost.py): five fleet
hosts, each a network namespace with its own journald, a three-server JetStream cluster with TLS and per-host nkeys
from `portsentinel fleet setup`, and a scanner; nothing leaves the lab's namespaces.

(a) Scan on host A -> ban in force on host E, measured at E's firewall: the scanner pings A and E from a fresh
    source address every 0.5 ms, sends the scan (SYNs to two watched ports of A), and the ban is in force at a host
    from the first probe it never answered (bench/fleet_probe.py). Side by side: the same scan's local ban on A.
    Each hop is dated by its own record (PS_TIME, one clock): A's detector record, A's responder ban (shared),
    E's fleet line, E's responder ban.
(a2) ``--pairs``: bursts of two such scans from two sources, ``--pair-gap`` ms apart (both probers given the scan's
    time): the second scan's remote ban from its own first SYN, beside the first's. The second shared ban is
    decided while the first's put may still be waiting for its acknowledgement.
(b) A host joining a fleet with ``--keys`` (100,000) active bans: from starting its portsentinel-fleet to every one
    of them in its nft set. Side by side: a bare nats-py watcher receiving the same keys, and one `nft -f` batch
    of as many elements, both in the joining host's namespace.
(c) ``--bulk`` (10,000) remote bans put at once by one host: from the first put to all in force on E; side by
    side the puts' own time.

Run as root (scripts/setup.sh --test first):
    unshare --mount --propagation private --fork -- bash scripts/with-journald.sh \\
        .venv/bin/python -m bench.fleet_e2e_bench [--scans 40] [--pairs 20] [--keys 100000] [--bulk 10000]
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from tests.lab.fleethost import FleetHost, FleetSite, fleet_site

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
HOSTS = ("a", "b", "c", "d", "e")  # a: scanned; b, c: put the bulk keys; d: joins late; e: measured


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def row(name: str, values: list[float]) -> str:
    if not values:
        return f"  {name:<44} (none)"
    ms = [v * 1000 for v in values]
    return (f"  {name:<44} median {statistics.median(ms):7.1f} ms   p99 {pct(ms, 0.99):7.1f} ms   "
            f"max {max(ms):7.1f} ms   (n={len(ms)})")


def first_time(records: list[dict[str, str]], **match: str) -> float | None:
    times = [float(r["PS_TIME"]) for r in records if all(r.get(k) == v for k, v in match.items()) and "PS_TIME" in r]
    return min(times) if times else None


def remote_line_time(host: FleetHost, addr: str) -> float | None:
    try:
        lines = host.remote.read_text().splitlines()
    except FileNotFoundError:
        return None
    for line in reversed(lines):
        if f'"{addr}"' in line:
            rec = json.loads(line)
            if rec.get("PS_SRC") == addr and rec.get("PS_EVENT") == "ban":
                return float(rec["PS_TIME"])
    return None


def latency(site: FleetSite, scans: int) -> None:
    a, e = site.hosts["a"], site.hosts["e"]
    hops: dict[str, list[float]] = {k: [] for k in ("a_inforce", "e_inforce", "detector", "a_ban", "e_line",
                                                    "e_ban", "e_minus_a")}
    missed = 0
    for _ in range(scans):
        (src,) = site.aliases(1)
        out = site.scanner.run([PY, "-m", "bench.fleet_probe", "--src", src, "--targets",
                                f"{a.machine.addr4},{e.machine.addr4}"], timeout=30).stdout
        probe = json.loads(out.strip().splitlines()[-1])
        t0, at_a, at_e = probe["scan_at"], probe[a.machine.addr4], probe[e.machine.addr4]
        if at_a is None or at_e is None:
            missed += 1
            continue
        hops["a_inforce"].append(at_a - t0)
        hops["e_inforce"].append(at_e - t0)
        hops["e_minus_a"].append(at_e - at_a)
        recs_a = a.machine.journal(f"PS_SRC={src}")
        recs_e = e.machine.journal(f"PS_SRC={src}", "PS_EVENT=ban")
        marks = {"detector": first_time(recs_a, SYSLOG_IDENTIFIER="portsentinel-detector"),
                 "a_ban": first_time(recs_a, SYSLOG_IDENTIFIER="portsentinel-responder", PS_EVENT="ban"),
                 "e_line": remote_line_time(e, src), "e_ban": first_time(recs_e, PS_JAIL="fleet")}
        for key, when in marks.items():
            if when is not None:
                hops[key].append(when - t0)
    print(f"(a) scan on A -> ban in force, {scans} scans from fresh addresses ({missed} not measured):")
    print(row("local ban on A, in force at A's firewall", hops["a_inforce"]))
    print(row("remote ban on E, in force at E's firewall", hops["e_inforce"]))
    print(row("  E after A (the fleet's share)", hops["e_minus_a"]))
    print("  hops, each from the scan's first SYN, by the records' PS_TIME:")
    print(row("  A detector record written", hops["detector"]))
    print(row("  A responder ban record (shared)", hops["a_ban"]))
    print(row("  E fleet line written (wake->put->watch)", hops["e_line"]))
    print(row("  E responder ban record (fleet jail)", hops["e_ban"]))


def pairs(site: FleetSite, count: int, gap: float) -> None:
    """Bursts of two scans of A from two fresh sources, the second ``gap`` seconds after the first: the second's
    shared ban is decided while the first's put may still wait for its acknowledgement."""
    a, e = site.hosts["a"], site.hosts["e"]
    first: list[float] = []
    second: list[float] = []
    missed = 0
    for _ in range(count):
        srcs = site.aliases(2)
        at = time.time() + 0.5  # both probers started and pinging by then
        procs = [site.scanner.popen([PY, "-m", "bench.fleet_probe", "--src", src, "--targets",
                                     f"{a.machine.addr4},{e.machine.addr4}", "--at", f"{at + i * gap:.6f}"],
                                    stdout=subprocess.PIPE) for i, src in enumerate(srcs)]
        outs = [json.loads(proc.communicate(timeout=30)[0].decode().strip().splitlines()[-1]) for proc in procs]
        if any(o[e.machine.addr4] is None for o in outs):
            missed += 1
            continue
        first.append(outs[0][e.machine.addr4] - outs[0]["scan_at"])
        second.append(outs[1][e.machine.addr4] - outs[1]["scan_at"])
    print(f"(a2) bursts of two scans of A, {gap * 1000:.0f} ms apart, {count} bursts ({missed} not measured):")
    print(row("remote ban on E, first scan", first))
    print(row("remote ban on E, second scan (from its SYN)", second))


def keys_tool(site: FleetSite, host: str, what: str, count: int, first: str = "100.64.0.0",
              timeout: float = 300) -> tuple[float, float, list[str]]:
    """(seconds, epoch of the first put or of the watch's start, the last puts' addresses in the stream's order)
    of bench/fleet_keys.py in ``host``."""
    setup = site.setup_dir
    out = site.lab.run(host, [PY, str(ROOT / "bench" / "fleet_keys.py"), what, "--host", host, "--seed",
                              str(setup / "hosts" / host / f"{host}.nk"), "--ca", str(setup / "ca.pem"),
                              "--count", str(count), "--first", first, "--limit", str(timeout - 10)],
                       timeout=timeout).stdout
    got = json.loads(out.strip().splitlines()[-1])
    return float(got["seconds"]), float(got["start"]), list(got.get("last", []))


def last_fleet_ban(host: FleetHost) -> float:
    """PS_TIME of the host's last ban record of the fleet jail (its journal)."""
    recs = host.machine.journal("-n", "1", "SYSLOG_IDENTIFIER=portsentinel-responder", "PS_JAIL=fleet",
                                "PS_EVENT=ban")
    return float(recs[-1]["PS_TIME"]) if recs else float("nan")


def line_times(host: FleetHost, skip: int) -> tuple[int, float, float]:
    """(count, first PS_TIME, last PS_TIME) of the host's fleet lines after the first ``skip``."""
    lines = host.remote.read_text().splitlines()[skip:]
    if not lines:
        return 0, float("nan"), float("nan")
    return len(lines), float(json.loads(lines[0])["PS_TIME"]), float(json.loads(lines[-1])["PS_TIME"])


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process so far (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def all_cpu() -> dict[int, tuple[str, float]]:
    """(command name, CPU seconds so far) of every process on the machine, by pid. A kernel worker's name carries
    the work it runs now (kworker/0:1-events): that part is cut off."""
    out: dict[int, tuple[str, float]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                text = (d / "stat").read_text()
            except OSError:
                continue
            comm = text[text.index("(") + 1:text.rindex(")")]
            if comm.startswith("kworker"):
                comm = "kworker"
            f = text.rsplit(")", 1)[1].split()
            out[int(d.name)] = (comm, (int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])) / os.sysconf("SC_CLK_TCK"))
    return out


def top_cpu(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]], n: int = 8) -> str:
    """The commands that used the most CPU between two :func:`all_cpu` snapshots (processes that ended between
    them, with their children's time, are counted in their waiting parent)."""
    by: dict[str, float] = {}
    for pid, (name, secs) in after.items():
        old = before.get(pid)
        by[name] = by.get(name, 0.0) + secs - (old[1] if old is not None and old[0] == name else 0.0)
    top = sorted(by.items(), key=lambda kv: -kv[1])[:n]
    return ", ".join(f"{name} {secs:.2f}" for name, secs in top if secs >= 0.01)


def machine_busy() -> float:
    """CPU seconds every core of the machine has spent not idle so far (/proc/stat)."""
    ticks = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def sample(first: str, count: int) -> list[str]:
    """18 of the ``count`` addresses from ``first``: the first, the last and 16 spread between."""
    low = int(ipaddress.IPv4Address(first))
    picks = sorted({low + count - 1, low, *(low + (count * i) // 16 for i in range(16))})
    return [str(ipaddress.IPv4Address(x)) for x in picks]


def watch_set(site: FleetSite, host: str, addrs: list[str] | None, limit: float,
              then: tuple[str, int] | None = None) -> subprocess.Popen[bytes]:
    """bench/set_watch.py in the host's namespace: polls ``addrs`` (None: a line written to its stdin later) in
    the fleet set over netlink every 10 ms, well under a millisecond of CPU a poll (`nft get element` fetched the
    whole set each time: ~50 ms of CPU beside 100,000 elements, taken from the responder being measured); then
    (``then``: first address, count) walks the whole range the same way."""
    extra = ["--then-range", then[0], str(then[1])] if then else []
    return site.lab.popen(host, [PY, "-m", "bench.set_watch", "--table", "portsentinel", "--set", "fleet_v4",
                                 "--addrs", ",".join(addrs) if addrs else "-", "--limit", str(limit), *extra],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def wait_all(host: FleetHost, watcher: subprocess.Popen[bytes], limit: float, *,
             addrs: list[str] | None = None) -> tuple[float, str]:
    """(epoch, how) by which the watcher saw its addresses (the last ones the host's responder applies, in the
    stream's order, and a spread sample; ``addrs`` are sent to its stdin) all in force, and, when it walked the
    whole range after that, the epoch it had confirmed all of them instead if one was still missing on the way
    (a stall): the time every one of them was in force, at the latest."""
    out, _ = watcher.communicate(None if addrs is None else (",".join(addrs) + "\n").encode(), timeout=limit + 30)
    try:
        got = json.loads(out.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise AssertionError(f"set_watch: {out.decode()[-2000:]}") from None
    if got.get("at") is None:
        raise AssertionError(f"[{host.name}] the last bans were not in force within {limit:.0f} s")
    if "all_at" not in got:
        return float(got["at"]), "the last ones in force"
    if got["all_at"] is None:
        raise AssertionError(f"[{host.name}] {got['missing']:,} bans still not in force after {limit:.0f} s")
    if got["stalls"]:
        return float(got["all_at"]), (f"the last ones in force, then {got['stalls']} stall(s) on the walk over "
                                      f"the range: the walk's end")
    return float(got["at"]), f"the last ones in force; every ban in force when the walk asked ({got['walk_s']:.2f} s)"


def nft_floor(host: FleetHost, count: int) -> float:
    """One `nft -f` batch adding ``count`` timeout elements to a scratch set in the host's namespace."""
    elems = ", ".join(f"{ipaddress.IPv4Address(int(ipaddress.IPv4Address('100.80.0.0')) + i)} timeout 600s"
                      for i in range(count))
    script = ("add table inet psbench\n"
              "add set inet psbench s { type ipv4_addr; flags timeout; }\n"  # as fleet_v4: a hash set
              f"add element inet psbench s {{ {elems} }}\n")
    start = time.monotonic()
    host.machine.run(["nft", "-f", "-"], input=script, timeout=120)
    took = time.monotonic() - start
    host.machine.run(["nft", "delete", "table", "inet", "psbench"], timeout=60)
    return took


def join(site: FleetSite, keys: int) -> None:
    d = site.hosts["d"]
    first = "100.64.0.0"
    put, _, last = keys_tool(site, "b", "fill", keys, first)
    marks = sorted(set(last) | set(sample(first, keys)))
    # The hosts already in the fleet (a, c, e) apply the same bans meanwhile; on real machines that is their own
    # CPU, here it is the joiner's: wait until they have all of them in force before anything is timed.
    settled = time.time()
    for name in ("a", "c", "e"):
        wait_all(site.hosts[name], watch_set(site, name, marks, 300), 300)
    settled = time.time() - settled
    floor_watch, _, _ = keys_tool(site, "d", "watch", keys)
    floor_nft = nft_floor(d, keys)
    assert d.responder is not None and d.responder.proc is not None
    res_pid = d.responder.proc.pid
    res_cpu, busy, procs = cpu_seconds(res_pid), machine_busy(), all_cpu()
    watcher = watch_set(site, "d", marks, 300, then=(first, keys))
    start = time.time()
    d.join(wait=False)
    assert d.fleet is not None
    done, how = wait_all(d, watcher, 300)
    res_cpu, busy, top = cpu_seconds(res_pid) - res_cpu, machine_busy() - busy, top_cpu(procs, all_cpu())
    fleet_cpu = cpu_seconds(d.fleet.pid)
    n, first_line, last_line = line_times(d, 0)
    print(f"(b) a host joining a fleet with {keys:,} active bans (put by b in {put:.1f} s; in force on a, c and e "
          f"{settled:.1f} s later, before the join):")
    print(f"  all {keys:,} in force in the joiner's nft set, from starting portsentinel-fleet  "
          f"{done - start:6.2f} s   (goal <= 5 s)\n      ({how})")
    print(f"    its first fleet line written                     {first_line - start:6.2f} s")
    print(f"    its last fleet line written ({n:,} lines)        {last_line - start:6.2f} s")
    print(f"    its responder's last fleet ban record            {last_fleet_ban(d) - start:6.2f} s")
    print(f"    CPU by then: its responder {res_cpu:.2f} s, its portsentinel-fleet {fleet_cpu:.2f} s, the whole "
          f"machine {busy:.2f} s of {os.cpu_count() or 1} x {done - start:.2f} s")
    print(f"    CPU seconds by command by then: {top}")
    print(f"  floor: bare nats-py watcher receiving the keys     {floor_watch:6.2f} s")
    print(f"  floor: one nft batch of {keys:,} elements           {floor_nft:6.2f} s")


def bulk(site: FleetSite, count: int) -> None:
    e = site.hosts["e"]
    first = "100.96.0.0"
    before = len(e.remote.read_text().splitlines())
    # started now, told the addresses once the puts are acknowledged
    watcher = watch_set(site, "e", None, 120, then=(first, count))
    put, start, last = keys_tool(site, "c", "fill", count, first)
    done, how = wait_all(e, watcher, 120, addrs=sorted(set(last) | set(sample(first, count))))
    n, first_line, last_line = line_times(e, before)
    print(f"(c) {count:,} remote bans put at once by c (acknowledged in {put:.2f} s):")
    print(f"  all in force on e, from the first put              {done - start:6.2f} s   "
          f"({count / (done - start):,.0f} bans/s)\n      ({how})")
    print(f"    e's first fleet line written                     {first_line - start:6.2f} s")
    print(f"    e's last fleet line written ({n:,} lines)        {last_line - start:6.2f} s")
    print(f"    e's responder's last fleet ban record            {last_fleet_ban(e) - start:6.2f} s")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scans", type=int, default=40)
    p.add_argument("--pairs", type=int, default=0,
                   help="(a2) bursts of two scans; 0 (default) skips it. A's jail bans at most 60 sources a minute "
                        "(maxbans_per_minute): beyond ~60 scans and pair scans in a run, bursts go unmeasured")
    p.add_argument("--pair-gap", type=float, default=3.0, metavar="MS", help="(a2) ms between the two scans")
    p.add_argument("--keys", type=int, default=100_000, help="(b); 0 skips it")
    p.add_argument("--bulk", type=int, default=10_000, help="(c); 0 skips it")
    p.add_argument("--profile", metavar="DIR", type=Path,
                   help="run d's and e's responder and portsentinel-fleet under cProfile (files in DIR) and print "
                        "where their time went (slower: compare hops within one run only)")
    args = p.parse_args()
    if not 1 <= args.scans + 2 * args.pairs <= 140 or min(args.scans, args.pairs) < 0:
        p.error("--scans + 2 x --pairs: 1 to 140 (one fresh scanner address each)")
    print(f"# fleet_e2e_bench on {platform.node()}, {os.cpu_count()} cores, {platform.platform()}, "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    with fleet_site(HOSTS) as site:
        print(f"# nats-server {site.lab.version}, 3 servers (R3), TLS + nkeys; hosts {', '.join(HOSTS)}")
        if args.profile:
            args.profile.mkdir(parents=True, exist_ok=True)
            for name in ("d", "e"):
                site.hosts[name].profile = args.profile
        site.start(["a"])
        site.start(["b", "c", "e"], detector=False)
        site.hosts["d"].start(detector=False, fleet=False)
        if args.scans:
            latency(site, args.scans)
        if args.pairs:
            pairs(site, args.pairs, args.pair_gap / 1000)
        if args.keys:
            join(site, args.keys)
        if args.bulk:
            bulk(site, args.bulk)
        if args.profile:
            for name in ("d", "e"):
                site.hosts[name].stop()
                for part in ("fleet", "responder"):
                    top(args.profile / f"{name}-{part}.prof", f"{name}'s {part}")
    return 0


def top(path: Path, what: str, lines: int = 14) -> None:
    """The functions ``what`` spent most of its own time in (cProfile, by internal time)."""
    import io
    import pstats

    if not path.exists():
        print(f"  (no profile {path})")
        return
    out = io.StringIO()
    pstats.Stats(str(path), stream=out).sort_stats("tottime").print_stats(lines)
    body = out.getvalue()
    print(f"--- profile of {what} (by own time; {path}):")
    print(body[body.find("   ncalls"):].rstrip())


if __name__ == "__main__":
    try:
        sys.exit(main())
    except subprocess.TimeoutExpired as exc:
        print(f"timed out: {exc}", file=sys.stderr)
        sys.exit(1)
