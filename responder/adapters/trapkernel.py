"""The kernel trap's moving parts: install, keep in sync, read, remove (responder.trap.ruleset writes the scripts).

``KernelTraps`` is what responder.service holds: ``configure()`` at load and reload (installs the trap of every
jail with a ``kernel-trap`` action, removes the traps of jails that lost it), ``tick()`` on a timer (listening
ports from /proc/net, never-ban facts), ``read()`` when an NFLOG socket is readable (the kernel's bans),
``unban()``, ``status()``, ``stop()``. Every nft call goes through the responder's Runner as one ``nft -f -``
transaction.
"""

from __future__ import annotations

import json
import logging
import selectors
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from portsentinel import record as R
from portsentinel.responder.actions.action import Action
from portsentinel.responder.adapters import facts
from portsentinel.responder.adapters.listening import listening_ports
from portsentinel.responder.adapters.nflog import NflogSocket
from portsentinel.responder.adapters.runner import Result, Runner
from portsentinel.responder.core.jail import Jail
from portsentinel.responder.trap import hits as H
from portsentinel.responder.trap import ruleset as T
from portsentinel.responder.trap import settings as S

log = logging.getLogger("portsentinel.responder")

Report = Callable[..., None]


@dataclass
class _Trap:
    settings: S.TrapSettings
    listening: dict[str, frozenset[int]] = field(default_factory=dict)
    never: tuple[str, ...] = ()
    next_listen: float = 0.0
    next_facts: float = 0.0


class KernelTraps:
    def __init__(self, runner: Runner, report: Report, *, nft: tuple[str, ...] = ("nft",),
                 proc_net: str = "/proc/net") -> None:
        self.runner = runner
        self.report = report
        self.nft = nft
        self.proc_net = proc_net
        self.traps: dict[str, _Trap] = {}  # by jail
        self.sockets: dict[int, NflogSocket] = {}  # by NFLOG group
        self.tarpit = H.Tarpit()
        #: Per jail, the counter of trap hits when the trap has its own maxretry (set by the service).
        self.strikes: dict[str, Jail] = {}
        self.sel: selectors.BaseSelector | None = None
        self.hits_total = 0
        #: Seconds from a listener appearing in /proc/net to the set holding it, last measured (diagnostics).
        self.listener_syncs = 0

    # ------------------------------------------------------------------ kernel
    def _nft(self, script: str) -> Result:
        return self.runner.run([*self.nft, "-f", "-"], input=script, timeout=30)

    def _json(self, *args: str) -> list[dict[str, Any]]:
        """``nft -j ARGS`` read in full (the Runner keeps only 4 KiB of output; a full set lists far more)."""
        try:
            out = subprocess.run([*self.nft, "-j", *args], capture_output=True, text=True, timeout=10, check=False)
            items = json.loads(out.stdout or "{}").get("nftables", [])
        except (OSError, ValueError, AttributeError, subprocess.TimeoutExpired):
            return []
        return [i for i in items if isinstance(i, dict)] if isinstance(items, list) else []

    def _facts(self) -> tuple[str, ...]:
        return tuple(sorted({*facts.own_addresses(), *facts.gateways(), *facts.resolvers()}))

    def _install(self, tr: _Trap) -> Result:
        s = tr.settings
        tr.listening = listening_ports(self.proc_net)
        tr.never = self._facts()
        now = time.monotonic()
        tr.next_listen = now + s.listener_sync if s.listener_sync else float("inf")
        tr.next_facts = now + s.facts_sync
        script = T.install_script(s, tr.listening, tr.never)
        res = self._nft(script)
        if not res.ok:  # e.g. a set whose size or timeout changed: rebuild from nothing
            self._remove(s)
            res = self._nft(script)
        return res

    def _remove(self, s: S.TrapSettings) -> None:
        stmts = T.remove_statements(s)
        if not self._nft("".join(x + "\n" for x in stmts)).ok:
            for stmt in stmts:  # some objects were missing: remove the others one by one
                self._nft(stmt + "\n")

    # ------------------------------------------------------------------ lifecycle
    def configure(self, actions: Mapping[str, list[Action]], ignoreip: Mapping[str, Iterable[S.IPNetwork]],
                  sel: selectors.BaseSelector, prefixes: Mapping[str, tuple[int, int]] | None = None) -> list[str]:
        """Install the traps of the jails whose actions include one marked ``kerneltrap = yes``; remove the
        others. Returns errors (a jail whose trap failed keeps its other actions)."""
        self.sel = sel
        errors: list[str] = []
        wanted: dict[str, S.TrapSettings] = {}
        for jail, acts in actions.items():
            for a in acts:
                if a.options.get(S.MARKER, "").strip().lower() in ("yes", "1", "true"):
                    try:
                        p4, p6 = (prefixes or {}).get(jail, (32, 64))
                        wanted[jail] = S.settings_from(a.params, jail, ignoreip.get(jail, ()), prefix4=p4,
                                                       prefix6=p6)
                    except S.TrapError as exc:
                        errors.append(f"{a.path}: {exc}")
        for jail in list(self.traps):
            old = self.traps[jail].settings
            if jail not in wanted or (wanted[jail].name, wanted[jail].table) != (old.name, old.table):
                self._remove(old)
                del self.traps[jail]
        for jail, s in wanted.items():
            tr = _Trap(s)
            res = self._install(tr)
            if not res.ok:
                errors.append(f"jail {jail}: kernel trap not installed: {res.stderr.strip()[:500]}")
                self._remove(s)
                self.traps.pop(jail, None)
                continue
            self.traps[jail] = tr
        self._open_sockets(errors)
        for err in errors:
            self.report(R.Event.FAILED, err, PS_ACTION=S.ACTION, PS_DETAIL="kernel-trap")
        return errors

    def _open_sockets(self, errors: list[str]) -> None:
        groups = {tr.settings.group for tr in self.traps.values()}
        for g in list(self.sockets):
            if g not in groups:
                if self.sel is not None:
                    self.sel.unregister(self.sockets[g])
                self.sockets.pop(g).close()
        for g in groups - set(self.sockets):
            try:
                sock = NflogSocket(g)
            except OSError as exc:
                errors.append(f"kernel trap: NFLOG group {g}: {exc} (kernel bans are enforced but not reported)")
                continue
            self.sockets[g] = sock
            if self.sel is not None:
                self.sel.register(sock, selectors.EVENT_READ, ("trap", str(g)))

    def repair(self) -> list[str]:
        """Re-install each trap whose base chain is gone (a flushed ruleset); the jails whose trap came back."""
        out = []
        for jail, tr in self.traps.items():
            if self.runner.run([*self.nft, "list", "chain", "inet", tr.settings.table, tr.settings.chain]).ok:
                continue
            res = self._install(tr)
            if res.ok:
                out.append(jail)
            else:
                self.report(R.Event.FAILED, f"jail {jail}: kernel trap lost and not re-installed: "
                                            f"{res.stderr.strip()[:300]}", PS_JAIL=jail, PS_ACTION=S.ACTION,
                            PS_STDERR=res.stderr.strip()[:2000])
        return out

    def stop(self) -> None:
        """Remove every trap (jail chains, sets, counters) and close the sockets: nothing stale is left."""
        for tr in self.traps.values():
            self._remove(tr.settings)
        self.traps.clear()
        self._open_sockets([])

    # ------------------------------------------------------------------ timers
    def facts_changed(self) -> None:
        """The host's addresses, gateways or resolvers changed: sync every trap's never-ban sets now."""
        for tr in self.traps.values():
            tr.next_facts = 0.0

    def next_due(self) -> float | None:
        """Monotonic time of the next sync (listeners, facts)."""
        dues = [min(tr.next_listen, tr.next_facts) for tr in self.traps.values()]
        return min(dues, default=None)

    def tick(self) -> None:
        now = time.monotonic()
        for jail, tr in self.traps.items():
            s = tr.settings
            listening: dict[str, frozenset[int]] | None = None
            never: tuple[str, ...] | None = None
            if now >= tr.next_listen:
                tr.next_listen = now + s.listener_sync
                cur = listening_ports(self.proc_net)
                if cur != tr.listening:
                    listening = cur
            if now >= tr.next_facts:
                tr.next_facts = now + s.facts_sync
                cur_never = self._facts()
                if cur_never != tr.never:
                    never = cur_never
            if listening is None and never is None:
                continue
            res = self._nft(T.sync_script(s, listening=listening, never=never))
            if res.ok:
                tr.listening = listening if listening is not None else tr.listening
                tr.never = never if never is not None else tr.never
                self.listener_syncs += 1
            else:
                self.report(R.Event.FAILED, f"jail {jail}: kernel trap sync failed: {res.stderr.strip()[:300]}",
                            PS_JAIL=jail, PS_ACTION=S.ACTION, PS_STDERR=res.stderr.strip()[:2000])

    def expired(self, now: float) -> list[tuple[str, H.TrapHit]]:
        return self.tarpit.expired(now)

    # ------------------------------------------------------------------ events
    def read(self, group: int) -> list[tuple[str, H.TrapHit]]:
        """(jail, hit) for every kernel ban the NFLOG socket of ``group`` has reported."""
        sock = self.sockets.get(group)
        if sock is None:
            return []
        by_name = {tr.settings.prefix: (jail, tr.settings) for jail, tr in self.traps.items()}
        out: list[tuple[str, H.TrapHit]] = []
        for pkt in sock.read():
            found = by_name.get(pkt.prefix)
            if found is None:
                continue
            hit = H.parse_payload(found[1].name, pkt.payload, pkt.time)
            if hit is None:
                continue
            self.hits_total += 1
            self.tarpit.add(found[0], hit, found[1].tarpit)
            out.append((found[0], hit))
        return out

    def unban(self, ip: str | None) -> list[tuple[str, str]]:
        """Lift tarpit entries of ``ip`` (an address or network; None: all) from the kernel: the address's own
        element and its network's (an IPv6 source is held by its /64); returns (jail, ip) lifted."""
        lifted = self.tarpit.remove(ip)
        for jail, addr in lifted:
            tr = self.traps.get(jail)
            if tr is not None:
                self._nft(T.unban_script(tr.settings, addr))
        if ip is not None:
            for jail, tr in self.traps.items():
                near = self.tarpit.remove_within(jail, T.tarpit_network(tr.settings, ip))
                for _, addr in near:
                    self._nft(T.unban_script(tr.settings, addr))
                lifted += near
                self._nft(T.unban_script(tr.settings, ip))
        if ip is None:
            for tr in self.traps.values():
                n = tr.settings.obj
                self._nft(f"flush set inet {tr.settings.table} {n('t4')}\nflush set inet {tr.settings.table} "
                          f"{n('t6')}\n")
        return lifted

    # ------------------------------------------------------------------ status
    def counters(self, jail: str) -> dict[str, Any]:
        tr = self.traps.get(jail)
        if tr is None:
            return {}
        s = tr.settings
        out: dict[str, Any] = {"shape": s.shape, "tarpit": s.tarpit, "size": s.size, "rate": s.rate,
                               "listening": {p: sorted(v) for p, v in tr.listening.items()},
                               "hits_reported": self.hits_total,
                               "lost_notifications": sum(x.lost for x in self.sockets.values())}
        for item in self._json("list", "counters", "table", "inet", s.table):
            c = item.get("counter")
            if isinstance(c, dict) and str(c.get("name", "")).startswith(s.name + "_"):
                out[str(c["name"])[len(s.name) + 1:]] = int(c.get("packets", 0))
        for fam in ("t4", "t6"):
            sets = [i["set"] for i in self._json("list", "set", "inet", s.table, s.obj(fam)) if "set" in i]
            out[f"elements_{fam}"] = len(sets[0].get("elem", [])) if sets and isinstance(sets[0], dict) else None
        return out

    def banned(self, now: float) -> list[dict[str, object]]:
        return self.tarpit.rows(now)
