"""Follow the host's addresses, default routes and resolvers as they change, for the never-ban set.

Two descriptors for the service's selector loop, no thread:

- an rtnetlink socket joined to RTMGRP_IPV4_IFADDR, RTMGRP_IPV6_IFADDR, RTMGRP_IPV4_ROUTE and RTMGRP_IPV6_ROUTE
  (CAP_NET_ADMIN is not even needed to listen): the kernel tells of every address and route change at once;
- inotify (pyinotify) on the directories of the resolver files (responder.adapters.facts.RESOLVER_DIRS), so an
  edited or replaced resolv.conf, or systemd-resolved's new upstream list, is seen at once. A directory that
  does not exist yet is watched from the moment it does (re-tried on each :meth:`tick`).

:meth:`changed` drains both and says whether the facts must be read again; an overrun netlink socket (ENOBUFS)
counts as a change. The service then rebuilds its never-ban set from responder.adapters.facts.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import time
from typing import Any

import pyinotify

from portsentinel.responder.adapters import facts
from portsentinel.responder.core import hostfacts as H

log = logging.getLogger("portsentinel.responder")

GROUPS = H.RTMGRP_IPV4_IFADDR | H.RTMGRP_IPV6_IFADDR | H.RTMGRP_IPV4_ROUTE | H.RTMGRP_IPV6_ROUTE
_MASK = (pyinotify.IN_CLOSE_WRITE | pyinotify.IN_MOVED_TO | pyinotify.IN_MOVED_FROM | pyinotify.IN_CREATE
         | pyinotify.IN_DELETE | pyinotify.IN_MODIFY)
#: File names in the watched directories that matter (anything in the per-link and drop-in directories does).
_NAMES = frozenset({"resolv.conf", "resolved.conf", "resolve", "netif", "links", "resolved.conf.d"})
_ANY_NAME_DIRS = frozenset({"/run/systemd/netif/links", "/etc/systemd/resolved.conf.d",
                            "/run/systemd/resolved.conf.d"})
RETRY = 5.0


class NetlinkEvents:
    """The rtnetlink multicast socket: readable when an address or a route changed."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC,
                                  socket.NETLINK_ROUTE)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.sock.bind((0, GROUPS))

    def fileno(self) -> int:
        return self.sock.fileno()

    def changed(self) -> bool:
        """Drain what is queued (bounded); True when an address or a default route changed, or events were lost."""
        hit = False
        for _ in range(4096):
            try:
                data = self.sock.recv(1 << 16)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:  # the kernel dropped events: read everything again
                    hit = True
                    continue
                raise
            hit = hit or H.relevant(data)
        return hit

    def close(self) -> None:
        self.sock.close()


class ResolverFiles:
    """inotify on the resolver files' directories."""

    def __init__(self, dirs: tuple[str, ...] = facts.RESOLVER_DIRS) -> None:
        self.dirs = dirs
        self._hit = False
        self._wm: Any = pyinotify.WatchManager()
        self._notifier: Any = pyinotify.Notifier(self._wm, default_proc_fun=self._on_event, timeout=0)
        self._watched: dict[str, int] = {}
        self._next_retry = 0.0
        self.arm()

    def fileno(self) -> int:
        return int(self._wm.get_fd())

    def _on_event(self, event: Any) -> None:
        if event.path in _ANY_NAME_DIRS or event.name in _NAMES or event.mask & pyinotify.IN_IGNORED:
            self._hit = True

    def arm(self) -> bool:
        """Watch the directories that exist and are not watched yet; True when a new one was added."""
        added = False
        self._next_retry = time.monotonic() + RETRY
        for d in self.dirs:
            wd = self._watched.get(d)
            if wd is not None and self._wm.get_path(wd) is not None:
                continue
            if not os.path.isdir(d):
                continue
            got = self._wm.add_watch(d, _MASK, quiet=True).get(d, -1)
            if got >= 0:
                self._watched[d] = got
                added = True
        return added

    def changed(self) -> bool:
        for _ in range(64):
            if not self._notifier.check_events(timeout=0):
                break
            self._notifier.read_events()
            self._notifier.process_events()
        hit, self._hit = self._hit, False
        return hit

    def tick(self) -> bool:
        """Re-try missing directories (every RETRY seconds); True when one appeared (its files are new facts)."""
        return time.monotonic() >= self._next_retry and self.arm()

    def close(self) -> None:
        self._notifier.stop()


class HostWatch:
    """Both watches, registered in the service's selector as ``("host", …)``; either may be missing (logged)."""

    def __init__(self, sel: Any, *, follow: bool = True) -> None:
        self.sel = sel
        self.watches: list[NetlinkEvents | ResolverFiles] = []
        for kind in (NetlinkEvents, ResolverFiles) if follow else ():
            try:
                w = kind()
            except OSError as exc:
                log.warning("cannot follow the host's %s: %s (read at start and reload only)",
                            "addresses and routes" if kind is NetlinkEvents else "resolver files", exc)
                continue
            self.watches.append(w)
            sel.register(w, 1, ("host", kind.__name__))  # selectors.EVENT_READ
        self.updates = 0
        self.updated = 0.0

    def check(self) -> bool:
        """True when the facts may have changed since the last check (non-blocking; drains both watches)."""
        hit = False
        for w in self.watches:
            hit = w.changed() or hit
            if isinstance(w, ResolverFiles):
                hit = w.tick() or hit
        if hit:
            self.updates += 1
            self.updated = time.time()
        return hit

    def close(self) -> None:
        for w in self.watches:
            try:
                self.sel.unregister(w)
            except (KeyError, ValueError):
                pass
            w.close()
        self.watches.clear()
