"""The configuration on disk turned into running parts: jails bound to their filter, actions and source
(:func:`build`, which touches nothing that runs), and the sources those jails read opened or closed
(:func:`open_sources`)."""

from __future__ import annotations

import logging
import selectors
from dataclasses import dataclass
from pathlib import Path

from portsentinel.common import paths
from portsentinel.responder.actions.action import Action
from portsentinel.responder.actions.executor import Executor
from portsentinel.responder.adapters.store import Store
from portsentinel.responder.config.jailconf import JailConfig, ResponderConfig, load
from portsentinel.responder.core.engine import JailRuntime
from portsentinel.responder.core.guard import PerMinuteCap
from portsentinel.responder.core.jail import Jail
from portsentinel.responder.core.sources import Source
from portsentinel.responder.core.trust import pushed_down

DETECTOR_JSONL = paths.ALERTS_JSONL

log = logging.getLogger("portsentinel.responder")


@dataclass
class Built:
    config: ResponderConfig
    runtimes: list[JailRuntime]
    actions: dict[str, list[Action]]
    errors: list[str]


def source_for(jail: JailConfig, backend: str, use_journal: bool) -> tuple[str, bool]:
    """The source a jail reads ("journal" or "file:PATH") and whether it is the journal. ``backend`` is the
    daemon's option (auto, systemd, pyinotify); auto leaves it to the jail, whose auto means the journal when
    it is readable."""
    if jail.fleet:  # the fleet daemon's lines are in its JSON-lines file only (docs/responder.md, "The fleet")
        return f"file:{jail.logpath or paths.FLEET_JSONL}", False
    backend = backend if backend != "auto" else jail.backend
    if backend == "auto":
        backend = "systemd" if use_journal else "pyinotify"
    if backend == "systemd":
        return "journal", True
    path = jail.logpath or DETECTOR_JSONL
    return f"file:{path}", False


def build(config_dir: Path, executor: Executor, backend: str, use_journal: bool) -> Built:
    """The configuration on disk parsed, validated and bound (filters, actions), touching nothing that runs.
    Raises IniError (a ValueError) when jail.conf itself cannot be read."""
    from portsentinel.responder.filter.filters import load_filter

    cfg = load(config_dir)
    errors = list(cfg.errors)
    runtimes: list[JailRuntime] = []
    actions: dict[str, list[Action]] = {}
    for jc in cfg.jails:
        try:
            filt = load_filter(config_dir / "filter.d", jc.filter, jc.filter_args)
            actions[jc.name] = executor.load(jc)
        except ValueError as exc:  # IniError, FilterError and ActionError are ValueErrors
            errors.append(str(exc))
            continue
        source, journal = source_for(jc, backend, use_journal)
        runtimes.append(JailRuntime(jc, filt, Jail(jc), PerMinuteCap(jc.maxbans_per_minute), source, journal))
    return Built(cfg, runtimes, actions, errors)


def _file_start(path: str) -> str | None:
    """The cursor of a file's first line. The fleet jail reads the fleet daemon's file from its start the first
    time (a file source without a cursor starts at the end): the remote bans written before the jail was enabled
    or before the responder's state was lost are still in force at their origins, and their lines say until when
    (an expired one is skipped, a repeated one changes nothing)."""
    import os

    try:
        st = os.stat(path)
    except OSError:
        return None  # not there yet: read from its start when it appears
    return f"{st.st_dev}:{st.st_ino}:0"


def open_sources(sources: dict[str, Source], runtimes: list[JailRuntime], sel: selectors.BaseSelector,
                 store: Store) -> None:
    """``sources`` made to hold exactly the sources the jails read: new ones opened at their stored cursor and
    registered with the selector, ones no jail reads any more closed."""
    wanted: dict[str, list[JailRuntime]] = {}
    for rt in runtimes:
        wanted.setdefault(rt.source, []).append(rt)
    for name in list(sources):
        if name not in wanted:
            sel.unregister(sources[name])
            sources.pop(name).close()
    for name, rts in wanted.items():
        if name in sources:
            continue
        if name == "journal":
            from portsentinel.responder.adapters.journal_source import JournalSource

            matches: list[dict[str, str | tuple[str, ...]]] = []
            for rt in rts:
                # A jail without journalmatch needs every entry: an empty group matches all.
                # …and the jail's trusted _UIDs pushed down: journald never hands over other users' forgeries.
                matches.extend(pushed_down(getattr(rt.matcher, "journalmatch", []) or [{}], rt.cfg))
            src: Source = JournalSource(matches, name=name)
        else:
            from portsentinel.responder.adapters.file_source import FileSource

            path = name.split(":", 1)[1]
            src = FileSource(path, kind="jsonl" if path.endswith(".jsonl") else "text",
                             expected_uid=rts[0].cfg.file_owner, name=name)
        cursor = store.cursor(name)
        stored = cursor is not None
        if cursor is None and any(rt.cfg.fleet for rt in rts):
            cursor = _file_start(name.split(":", 1)[1])
        src.seek(cursor)
        if not stored:  # where it starts is committed: a crash before its first batch is committed reads it again
            start = src.position()
            why = None if start is None else store.start_cursor(name, start)
            if why is not None:  # (a full disk: the source is followed all the same)
                log.warning("%s: its starting point not stored (%s)", name, why)
        sources[name] = src
        if src.fileno() >= 0:
            sel.register(src, selectors.EVENT_READ, ("source", name))
