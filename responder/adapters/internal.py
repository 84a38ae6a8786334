"""Internal commands an action names as ``@name word…`` (run in-process, or via ``python -m`` here).

- ``@hosts-deny add|del IP [file=PATH] [daemon=ALL]`` — responder.adapters.hostsdeny.
- ``@mail [smtphost=H] [smtpport=N] [from=A] [to=A[,A…]] [subject=TEXT] [body=TEXT] [KEY=VALUE…]`` — every other
  ``KEY=VALUE`` becomes a ``KEY: VALUE`` line of the body (``matches=`` goes last, as a block).

- ``@nft-check FAMILY TABLE CHAIN SET…`` — succeeds when the chain exists and each set is looked up by one of its
  rules (so its sets exist too): an nftables action's ``actioncheck`` that also notices a flushed chain.

- ``@script PATH WORD…`` — runs PATH (absolute, owned by root, not group- or world-writable, nor its
  directory) with the words as its arguments, no shell (PortSentry's KILL_RUN_CMD).

Each returns ``(status, stdout, stderr)``: 0 done, 1 failed at run time, 2 bad usage.
"""

from __future__ import annotations

import os
import smtplib
import stat
import subprocess
import sys
from collections.abc import Callable, Sequence

from portsentinel.responder.adapters import hostsdeny, mailer, nftrules

Outcome = tuple[int, str, str]


def _kv(words: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    pos: list[str] = []
    opts: dict[str, str] = {}
    for w in words:
        key, eq, val = w.partition("=")
        if eq and key.isidentifier():
            opts[key] = val
        else:
            pos.append(w)
    return pos, opts


def hosts_deny(words: Sequence[str]) -> Outcome:
    pos, opts = _kv(words)
    if len(pos) != 2 or pos[0] not in ("add", "del"):
        return 2, "", "usage: @hosts-deny add|del IP [file=PATH] [daemon=ALL]"
    path = opts.get("file", hostsdeny.DEFAULT_FILE)
    try:
        changed = hostsdeny.edit(path, pos[1], add=pos[0] == "add", daemon=opts.get("daemon", "ALL"))
    except ValueError as exc:
        return 2, "", f"@hosts-deny: {exc}"
    except OSError as exc:
        return 1, "", f"@hosts-deny: {path}: {exc}"
    return 0, ("changed" if changed else "unchanged") + "\n", ""


def mail(words: Sequence[str]) -> Outcome:
    pos, opts = _kv(words)
    if pos:
        return 2, "", f"@mail: unexpected word {pos[0][:40]!r} (expected key=value)"
    known = {"smtphost", "smtpport", "from", "to", "subject", "body", "timeout"}
    try:
        msg = mailer.Mail(
            sender=opts.get("from", "root@localhost"),
            to=tuple(t.strip() for t in opts.get("to", "root@localhost").split(",") if t.strip()),
            subject=opts.get("subject", "portsentinel"),
            facts={k: v for k, v in opts.items() if k not in known},
            body=opts.get("body", ""),
            host=opts.get("smtphost", "localhost"),
            port=int(opts.get("smtpport", "25")),
            timeout=float(opts.get("timeout", "10")),
        )
        mailer.build(msg)
    except ValueError as exc:
        return 2, "", f"@mail: {exc}"
    try:
        mailer.send(msg)
    except (OSError, smtplib.SMTPException) as exc:
        return 1, "", f"@mail: {msg.host}:{msg.port}: {exc}"
    return 0, "", ""


SCRIPT_TIMEOUT = 30.0
SCRIPT_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}


def script_problem(path: str) -> str | None:
    """Why ``path`` may not be run as an action script, or None."""
    if not os.path.isabs(path):
        return f"{path}: not an absolute path"
    for p in (path, os.path.dirname(path)):
        try:
            st = os.stat(p)
        except OSError as exc:
            return f"{p}: {exc.strerror}"
        if st.st_uid != 0:
            return f"{p}: owned by uid {st.st_uid}, not root: refused"
        if st.st_mode & 0o022 and not (p != path and st.st_mode & stat.S_ISVTX):
            return f"{p}: group- or world-writable (mode {stat.S_IMODE(st.st_mode):o}): refused"
    if not os.access(path, os.X_OK) or not stat.S_ISREG(os.stat(path).st_mode):
        return f"{path}: not an executable file"
    return None


def script(words: Sequence[str]) -> Outcome:
    if not words:
        return 2, "", "usage: @script PATH [WORD...]"
    problem = script_problem(words[0])
    if problem:
        return 2, "", f"@script: {problem}"
    try:
        proc = subprocess.run(list(words), shell=False, capture_output=True, text=True, errors="replace",
                              timeout=SCRIPT_TIMEOUT, env=SCRIPT_ENV, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return 124, "", f"@script: {words[0]}: timed out after {SCRIPT_TIMEOUT:g}s"
    except OSError as exc:
        return 127, "", f"@script: {words[0]}: {exc}"
    return proc.returncode, proc.stdout, proc.stderr


def nft_check(words: Sequence[str]) -> Outcome:
    if len(words) < 3 or words[0] not in ("inet", "ip", "ip6"):
        return 2, "", "usage: @nft-check FAMILY TABLE CHAIN SET..."
    try:  # the chain's rules over netlink: `nft list chain` would fetch every element of the sets first
        found = nftrules.chain_sets(words[0], words[1], words[2], timeout=SCRIPT_TIMEOUT)
    except OSError as exc:
        return 1, "", f"@nft-check: chain {' '.join(words[:3])}: {exc.strerror or exc}"
    missing = [s for s in words[3:] if s not in found]
    if missing:
        return 1, "", f"@nft-check: no rule of chain {words[2]} matches set(s) {', '.join(missing)}"
    return 0, "", ""


COMMANDS: dict[str, Callable[[Sequence[str]], Outcome]] = {
    "hosts-deny": hosts_deny, "mail": mail, "nft-check": nft_check, "script": script,
}


def dispatch(name: str, words: Sequence[str]) -> Outcome:
    """Run internal command ``name`` with its words."""
    func = COMMANDS.get(name)
    if func is None:
        return 127, "", f"@{name}: no such internal command (known: {', '.join(sorted(COMMANDS))})"
    return func(words)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        sys.stderr.write("usage: python -m portsentinel.responder.adapters.internal NAME WORD...\n")
        return 2
    status, out, err = dispatch(args[0], args[1:])
    sys.stdout.write(out)
    sys.stderr.write(err)
    return status


if __name__ == "__main__":
    sys.exit(main())
