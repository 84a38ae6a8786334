"""Coalesce many nftables set-element changes into one ``nft -f -`` transaction.

``add``/``delete`` only buffer. ``commit()`` deduplicates (an address added twice keeps the longest timeout,
``None`` meaning "no timeout" being the longest; the last operation on an element wins between add and
delete), writes one script (one ``add element`` / ``delete element`` statement per set, in chunks) and runs
it through the runner as a single atomic transaction. A delete is preceded by an add of the same element in the
same transaction, so removing an element the kernel has already expired is not an error. When the batch
fails, its halves are retried, a failing half split again down to single elements, so one bad element costs
itself only (and a few runs, not one per element).
Addresses and networks are parsed (portsentinel.record.canonical_network) and set/table names checked, so
the script text cannot be steered.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from portsentinel.record import canonical_network
from portsentinel.responder.adapters.nftelems import Elements
from portsentinel.responder.adapters.runner import Result, Runner
from portsentinel.responder.config.names import nft_ident

CHUNK = 5000
_ident = nft_ident


def _addr(ip: str) -> str:
    return canonical_network(ip)  # an address, or a network for a set with flags interval


#: Text that can only be an address or network in nft's grammar (digits, dots, hex, colons, one prefix): what the
#: responder itself wrote to its store. Anything else is parsed (and refused) by :func:`_addr`.
_PLAIN = re.compile(r"(?:[0-9]{1,3}(?:\.[0-9]{1,3}){3}(?:/[0-9]{1,2})?|[0-9a-f:]{2,39}(?:/[0-9]{1,3})?)")
#: Many such texts, one a line: a restore's elements checked by one match over their joined text.
_PLAIN_LINES = re.compile(rf"(?:{_PLAIN.pattern}\n)*")


@dataclass
class CommitResult:
    """How a commit went: elements applied, failures (element, stderr), and how many nft runs it took."""

    applied: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    runs: int = 0
    batched: bool = True

    @property
    def ok(self) -> bool:
        return not self.failed


class NftBatch:
    """Pending element changes for sets of one nft table."""

    def __init__(self, runner: Runner, *, table: str = "portsentinel", family: str = "inet",
                 nft: Sequence[str] = ("nft",), timeout: float = 60.0) -> None:
        if family not in ("inet", "ip", "ip6"):
            raise ValueError(f"bad nft family {family!r}")
        self.runner = runner
        self.table = _ident("table", table)
        self.family = family
        self.nft = tuple(nft)
        self.timeout = timeout
        # (set, addr) -> ("add", timeout seconds | None) or ("delete", None)
        self._ops: dict[tuple[str, str], tuple[str, int | None]] = {}
        self._sets: dict[str, str] = {}
        #: Elements added by add_stored_many, kept as given (set, addresses, timeouts) until the commit: a restore's
        #: 100,000 elements cost no tuple or dict entry each unless the transaction fails.
        self._bulk: list[tuple[str, list[str], list[int | None]]] = []
        self._nbulk = 0

    def __len__(self) -> int:
        return len(self._ops) + self._nbulk

    def _set(self, name: str) -> str:
        """The set's name, checked once per batch (a bulk batch adds thousands of elements to one set)."""
        checked = self._sets.get(name)
        if checked is None:
            checked = self._sets[name] = _ident("set", name)
        return checked

    def add(self, set_name: str, ip: str, timeout: int | None = None) -> None:
        """Queue an element (``timeout`` seconds; None or a negative value: no timeout)."""
        if self._bulk:  # (merged with what is pending, the bulk elements included)
            self._unbulk()
        key = (self._set(set_name), _addr(ip))
        t = None if timeout is None or timeout < 0 else int(timeout)
        prev = self._ops.get(key)
        if prev is not None and prev[0] == "add":
            if prev[1] is None or (t is not None and prev[1] >= t):
                return
        self._ops[key] = ("add", t)

    def add_stored(self, set_name: str, ip: str, timeout: int | None) -> None:
        """Queue an element the responder wrote itself (a restore of its store): text that can only be an
        address or network is taken as it is (no parse per element; nft refuses a malformed one and the batch
        falls back), anything else is parsed as :meth:`add` does. No merge with a pending op of the element."""
        if self._bulk:  # (after the bulk elements, as it was queued after them)
            self._unbulk()
        key = (self._set(set_name), ip if _PLAIN.fullmatch(ip) else _addr(ip))
        self._ops[key] = ("add", None if timeout is None or timeout < 0 else timeout)

    def add_stored_many(self, set_name: str, ips: Sequence[str], timeouts: Sequence[int | None]) -> None:
        """:meth:`add_stored` for many elements of one set (the restore: 100,000 at a time): when every text can
        only be an address or network (one match over the joined text), they are queued without a call each;
        else one by one."""
        if len(ips) != len(timeouts):
            raise ValueError("one timeout per element")
        name = self._set(set_name)
        if not ips:
            return
        if not _PLAIN_LINES.fullmatch("\n".join(ips) + "\n"):
            for ip, t in zip(ips, timeouts, strict=True):
                self.add_stored(name, ip, t)
            return
        self._bulk.append((name, list(ips), list(timeouts)))
        self._nbulk += len(ips)

    def add_new(self, set_name: str, ips: Sequence[str], timeouts: Sequence[int | None]) -> None:
        """:meth:`add` for many distinct elements of one set (the live bulk path: a batch's bans): as
        :meth:`add_stored_many` (one match over their joined text, no call each) while nothing else is pending in
        this batch but other sets' such elements; else, or when an element repeats, :meth:`add` for each (which
        merges them)."""
        if (not self._ops and all(name != set_name for name, _, _ in self._bulk)
                and len(set(ips)) == len(ips)):
            self.add_stored_many(set_name, ips, timeouts)
            return
        for ip, t in zip(ips, timeouts, strict=True):
            self.add(set_name, ip, t)

    def _unbulk(self) -> None:
        """The bulk elements as ordinary pending adds (as add_stored: the last one of an element wins)."""
        for name, ips, touts in self._bulk:
            self._ops.update(zip([(name, ip) for ip in ips],
                                 [("add", None if t is None or t < 0 else t) for t in touts], strict=True))
        self._bulk.clear()
        self._nbulk = 0

    def _bulk_script(self) -> str:
        lines = []
        for name, ips, touts in self._bulk:
            elems = [ip if t is None or t < 0 else f"{ip} timeout {t if t > 1 else 1}s"
                     for ip, t in zip(ips, touts, strict=True)]
            lines += self._element_lines("add", name, elems)
        return "".join(lines)

    def _element_lines(self, verb: str, set_name: str, elems: list[str]) -> list[str]:
        """``verb element`` lines for ``elems`` of one set, :data:`CHUNK` elements a line."""
        head = f"{verb} element {self.family} {self.table} {set_name} {{ "
        return [head + ", ".join(elems[i:i + CHUNK]) + " }\n" for i in range(0, len(elems), CHUNK)]

    def delete(self, set_name: str, ip: str) -> None:
        """Queue the removal of an element."""
        if self._bulk:  # (after the bulk elements: a later removal wins over an earlier add)
            self._unbulk()
        self._ops[(self._set(set_name), _addr(ip))] = ("delete", None)

    def script(self, ops: Sequence[tuple[tuple[str, str], tuple[str, int | None]]] | None = None) -> str:
        """The nft script for ``ops`` (default: everything pending): all adds, then all deletes."""
        adds: dict[str, list[str]] = {}
        dels: dict[str, list[str]] = {}
        for (set_name, addr), (verb, t) in self._ops.items() if ops is None else ops:
            group = adds.get(set_name)
            if group is None:
                group = adds[set_name] = []
            group.append(addr if verb != "add" or t is None else f"{addr} timeout {t if t > 1 else 1}s")
            if verb == "delete":  # added first, so deleting an element the kernel already expired succeeds
                dels.setdefault(set_name, []).append(addr)
        lines = []
        for verb, groups in (("add", adds), ("delete", dels)):
            for set_name, elems in groups.items():
                lines += self._element_lines(verb, set_name, elems)
        return "".join(lines)

    def _run(self, text: str) -> Result:
        return self.runner.run([*self.nft, "-f", "-"], input=text, timeout=self.timeout)

    def _elements(self) -> Elements | None:
        """The runner's netlink path for set elements (responder.adapters.nftelems: an in-process runner's), when
        this batch runs the plain ``nft``."""
        kernel = getattr(self.runner, "elements", None)
        return kernel if isinstance(kernel, Elements) and self.nft == ("nft",) else None

    def bulk_text(self) -> str | None:
        """The script :meth:`commit` runs first when only bulk elements are pending (None otherwise, or when
        they go over netlink first): made by the caller's thread, the commit on another runs the C library alone
        (responder.actions.early)."""
        return self._bulk_script() if self._bulk and not self._ops and self._elements() is None else None

    def commit(self, text: str | None = None) -> CommitResult:
        """Apply everything pending in one transaction, falling back to one element at a time (``text``: what
        :meth:`bulk_text` returned, nothing queued since). Bulk elements alone go over netlink first when the
        runner has that path and their sets are plain timeout sets (no text, no parser), else as nft text."""
        res = CommitResult()
        if self._bulk and not self._ops:  # a restore's chunk, a batch's bans: straight from the lists
            kernel = self._elements()
            if kernel is not None and kernel.add(self.family, self.table, self._bulk):
                res.runs, res.applied = 1, self._nbulk
                self._bulk.clear()
                self._nbulk = 0
                return res
            first = self._run(self._bulk_script() if text is None else text)
            res.runs = 1
            if first.ok:
                res.applied = self._nbulk
                self._bulk.clear()
                self._nbulk = 0
                return res
        self._unbulk()
        ops = list(self._ops.items())
        self._ops.clear()
        if not ops:
            return res
        if not res.runs:
            first = self._run(self.script(ops))
            res.runs = 1
            if first.ok:
                res.applied = len(ops)
                return res
        res.batched = False
        # halves retried, each failing half split again down to single elements: a bad element among a restore's
        # 1,000,000 costs ~40 runs, not a million
        todo = [ops[:len(ops) // 2], ops[len(ops) // 2:]] if len(ops) > 1 else []
        if len(ops) == 1:
            res.failed.append((ops[0][0][1], first.stderr.strip()))
        while todo:
            part = todo.pop()
            if not part:
                continue
            one = self._run(self.script(part))
            res.runs += 1
            if one.ok:
                res.applied += len(part)
            elif len(part) == 1:
                res.failed.append((part[0][0][1], one.stderr.strip()))
            else:
                todo += [part[:len(part) // 2], part[len(part) // 2:]]
        return res
