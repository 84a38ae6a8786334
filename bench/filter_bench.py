"""Lines per second through fail2ban's stock sshd filter: portsentinel's filters vs fail2ban-regex, one run.

    .venv/bin/python -m bench.filter_bench [--lines 1000000] [--mode normal] [--log PATH] [--keep-log] [--stages]

Writes a deterministic auth.log (``--lines`` lines: sshd failures of every common kind, successful logins,
preauth closes, and the cron/sudo/systemd-logind noise of a real auth.log), then runs the same filter
(tests/.cache/fail2ban/etc/fail2ban/filter.d/sshd.conf, Debian's fail2ban package) over it twice:

- ours, serial: ``batch.examine_lines`` in this process (date detection, prefregex, failregexes, sessions);
- ours, parallel: the same with its regex stage in a worker process (the machine's second CPU);
- fail2ban: ``fail2ban-regex --raw -o ip LOG sshd`` (no DNS) (Debian's python3 with the unpacked package; the fail2ban
  service is never started), which prints the failure id of every failure, as the server would count them.

It prints lines per second and CPU seconds of each (the parallel run's: both processes), and checks all found
the same failures in the same order (else it exits 1).
Nothing here touches the network. Figures go into docs/performance.md.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from portsentinel.responder.filter.batch import examine_lines
from portsentinel.responder.filter.filters import load_filter
from tests.lab.machine import cpu_model

ROOT = Path(__file__).resolve().parents[1]
F2B = ROOT / "tests" / ".cache" / "fail2ban"
STOCK = F2B / "etc" / "fail2ban"


def _addresses(rng: random.Random) -> list[str]:
    v4 = [f"{rng.choice((198, 203))}.{rng.choice((51, 0))}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
          for _ in range(3000)]
    v6 = [f"2001:db8:{rng.randrange(65536):x}::{rng.randrange(1, 65536):x}" for _ in range(300)]
    return v4 + v6


_SSHD = [
    (20, "Failed password for {user} from {ip} port {port} ssh2"),
    (14, "Failed password for invalid user {user} from {ip} port {port} ssh2"),
    (14, "Invalid user {user} from {ip} port {port}"),
    (10, "Connection closed by invalid user {user} {ip} port {port} [preauth]"),
    (8, "Received disconnect from {ip} port {port}:11: Bye Bye [preauth]"),
    (8, "Disconnected from invalid user {user} {ip} port {port} [preauth]"),
    (5, "pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost={ip}  user={user}"),
    (4, "Connection closed by {ip} port {port} [preauth]"),
    (3, "Accepted publickey for {user} from {ip} port {port} ssh2: ED25519 SHA256:Yk3bq0sJ8tQe7e0m0dCkJg1mZ2Vn6wZ"),
    (3, "pam_unix(sshd:session): session opened for user {user}(uid=1000) by (uid=0)"),
    (3, "error: maximum authentication attempts exceeded for {user} from {ip} port {port} ssh2 [preauth]"),
    (2, "Disconnecting authenticating user {user} {ip} port {port}: Too many authentication failures [preauth]"),
    (2, "Did not receive identification string from {ip} port {port}"),
    (2, "Unable to negotiate with {ip} port {port}: no matching key exchange method found. Their offer: "
        "diffie-hellman-group1-sha1 [preauth]"),
    (2, "User {user} from {ip} not allowed because not listed in AllowUsers"),
]
_OTHER = [
    (6, "CRON[{pid}]: pam_unix(cron:session): session opened for user root(uid=0) by (uid=0)"),
    (6, "CRON[{pid}]: pam_unix(cron:session): session closed for user root"),
    (2, "sudo:    alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=/usr/bin/apt update"),
    (2, "systemd-logind[512]: New session {pid} of user alice."),
    (1, "systemd-logind[512]: Removed session {pid}."),
]
_USERS = ["root", "admin", "test", "oracle", "ubuntu", "postgres", "git", "alice", "user1", "guest"]


def write_log(path: Path, lines: int, seed: int = 11) -> None:
    """A deterministic auth.log of ``lines`` lines, one second apart every ~20 lines, ending about now."""
    rng = random.Random(seed)
    ips = _addresses(rng)
    sshd_w = [w for w, _ in _SSHD]
    other_w = [w for w, _ in _OTHER]
    start = time.time() - lines / 20 - 3600
    with open(path, "w", encoding="utf-8") as out:
        for i in range(lines):
            stamp = time.strftime("%b %e %H:%M:%S", time.localtime(start + i / 20))
            pid = 10000 + i // 4
            if rng.random() < 0.75:
                text = rng.choices(_SSHD, sshd_w)[0][1].format(
                    user=rng.choice(_USERS), ip=rng.choice(ips), port=rng.randrange(1024, 65536))
                out.write(f"{stamp} gw sshd[{pid}]: {text}\n")
            else:
                out.write(f"{stamp} gw {rng.choices(_OTHER, other_w)[0][1].format(pid=pid)}\n")


def run_ours(log: Path, mode: str, parallel: bool) -> tuple[float, float, float, list[str]]:
    """(wall s, cpu s of this process, cpu s of the worker process, failures' hosts) of ``examine_lines``."""
    flt = load_filter(STOCK / "filter.d", "sshd", {} if mode == "normal" else {"mode": mode})
    now = time.time()
    hosts: list[str] = []
    t0, before = time.perf_counter(), os.times()
    with open(log, encoding="utf-8") as fh:
        for v in examine_lines(flt, fh, now, parallel=parallel):
            if v.kind == "matched" or (v.host and "not an IP" in v.reason):
                hosts.append(v.host)
    wall, after = time.perf_counter() - t0, os.times()
    own = (after.user - before.user) + (after.system - before.system)
    worker = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    return wall, own, worker, hosts


STAGES = ("date", "+prefregex", "+failregexes", "+groups")


def run_floor(log: Path, mode: str, upto: str = "+groups") -> tuple[float, float]:
    """The regex work alone, up to a stage of STAGES: the date (the line's template, its lean twin, as the
    filter runs it), then the prefregex on the rest, then the candidate failregexes on its content, then their
    groups read; no date parsed, no sessions, no verdict. Run to "+groups" it is what no Python implementation
    of these regexes goes below; each stage's share is its difference to the one before."""
    flt = load_filter(STOCK / "filter.d", "sshd", {} if mode == "normal" else {"mode": mode})
    rules = flt.line_rules
    match = rules.match
    assert rules.dates is not None and match.prefregex is not None and match.dispatch is not None
    assert match.pref_groups is not None
    with open(log, encoding="utf-8") as fh:
        flt.examine_line(fh.readline(), time.time())
    tpl = rules.dates.last
    assert tpl is not None
    date_re, pref, fails, dispatch = tpl.lean, match.prefregex, match.failregex, match.dispatch
    pref_groups, fail_groups = match.pref_groups, match.fail_groups
    level = STAGES.index(upto)
    t0, c0 = time.perf_counter(), time.process_time()
    with open(log, encoding="utf-8") as fh:
        for line in fh:
            dm = date_re.search(line)
            if dm is None or level == 0:
                continue
            start, end = dm.span(1)
            pm = pref.search(line[:start] + line[end:].rstrip("\n") + "\n")
            if pm is None or level == 1:
                continue
            content = pm.group("content") + "\n"
            for i in dispatch.candidates(content):
                fm = fails[i].search(content)
                if fm is not None:
                    if level == 3:
                        groups = pref_groups.read(pm)
                        groups.update(fail_groups[i].read(fm))
                    break
    return time.perf_counter() - t0, time.process_time() - c0


def run_fail2ban(log: Path, mode: str) -> tuple[float, float, list[str]]:
    python = "/usr/bin/python3"
    spec = "sshd" if mode == "normal" else f"sshd[mode={mode}]"
    env = {**os.environ, "PYTHONPATH": str(F2B / "usr/lib/python3/dist-packages")}
    argv = [python, str(F2B / "usr/bin/fail2ban-regex"), "-c", str(STOCK), "--raw", "-o", "ip", str(log), spec]
    t0 = time.perf_counter()
    before = os.times()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=3600, check=False)
    wall = time.perf_counter() - t0
    after = os.times()
    if proc.returncode != 0:
        sys.exit(f"fail2ban-regex failed: {proc.stderr[-2000:]}")
    cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    return wall, cpu, [h for h in proc.stdout.splitlines() if h.strip()]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--mode", default="normal", choices=("normal", "ddos", "extra", "aggressive"))
    ap.add_argument("--log", type=Path, help="use this auth.log instead of writing one")
    ap.add_argument("--keep-log", action="store_true", help="keep the generated log (its path is printed)")
    ap.add_argument("--stages", action="store_true", help="also time the regex work stage by stage")
    args = ap.parse_args()
    if not (F2B / "usr/bin/fail2ban-regex").exists():
        sys.exit("tests/.cache/fail2ban missing: run scripts/setup.sh --test")
    tmpdir = tempfile.mkdtemp(prefix="portsentinel-filter-bench-") if args.log is None else ""
    log = args.log or Path(tmpdir) / "auth.log"
    if args.log is None:
        t0 = time.perf_counter()
        write_log(log, args.lines)
        print(f"wrote {log}: {args.lines} lines in {time.perf_counter() - t0:.1f} s")
    n = sum(1 for _ in open(log, encoding="utf-8"))
    print(f"machine: {cpu_model()}, {os.cpu_count()} cpus; date {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(f"filter: fail2ban's stock sshd.conf, mode={args.mode}; {n} lines")
    sw, sc, _sx, ours = run_ours(log, args.mode, parallel=False)
    pw, pc, px, ours_par = run_ours(log, args.mode, parallel=True)
    fw, fc, theirs = run_fail2ban(log, args.mode)
    rw, rc = run_floor(log, args.mode)
    stages = [(name, *run_floor(log, args.mode, name)) for name in STAGES[:-1]] if args.stages else []
    print(f"{'':22}{'wall s':>9}{'cpu s':>9}{'lines/s':>12}{'failures':>10}")
    print(f"{'portsentinel serial':22}{sw:9.1f}{sc:9.1f}{n / sw:12,.0f}{len(ours):10}")
    print(f"{'portsentinel parallel':22}{pw:9.1f}{pc + px:9.1f}{n / pw:12,.0f}{len(ours_par):10}"
          f"   (cpu: {pc:.1f} s this process + {px:.1f} s its worker)")
    print(f"{'fail2ban-regex':22}{fw:9.1f}{fc:9.1f}{n / fw:12,.0f}{len(theirs):10}")
    print(f"{'regex work only':22}{rw:9.1f}{rc:9.1f}{n / rw:12,.0f}{'':>10}")
    for name, tw, tc in stages:
        print(f"{'  ' + name:22}{tw:9.1f}{tc:9.1f}{n / tw:12,.0f}{'':>10}")
    if stages:
        print("per line, cpu (us): " + ", ".join(
            f"{name} {(tc - prev) / n * 1e6:.2f}" for (name, _w, tc), prev in
            zip([*stages, ("+groups", rw, rc)], [0.0] + [c for _n, _w, c in stages], strict=True))
            + f", the rest (date parse, sessions, verdicts) {(sc - rc) / n * 1e6:.2f}; total {sc / n * 1e6:.2f}")
    print(f"ratio portsentinel/fail2ban: serial {fw / sw:.2f}x by wall clock, {fc / sc:.2f}x by cpu; "
          f"parallel {fw / pw:.2f}x by wall clock, {fc / (pc + px):.2f}x by cpu")
    same = ours == theirs and ours_par == theirs
    print(f"same failures in the same order: serial {ours == theirs}, parallel {ours_par == theirs}")
    for name, got in (("serial", ours), ("parallel", ours_par)):
        if got != theirs:
            diff = next((i for i, (a, b) in enumerate(zip(got, theirs, strict=False)) if a != b),
                        min(len(got), len(theirs)))
            print(f"{name}: first difference at failure #{diff}: ours {got[diff:diff + 3]} "
                  f"theirs {theirs[diff:diff + 3]}")
    if args.log is None and not args.keep_log:
        log.unlink()
        os.rmdir(tmpdir)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
