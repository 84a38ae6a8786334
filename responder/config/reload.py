"""What a reload changes: old jails and actions against the new ones, compared before anything is touched. Pure.

The service builds the whole new configuration first (jails, filters, actions: parsed, validated, bound); when
anything in it is wrong the reload is refused and nothing running changes. Otherwise this plan says, per jail,
which actions stay as they are, which go and which come, so every ban in force is moved to the new actions
(docs/responder.md, "Reload").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from portsentinel.responder.actions.action import Action


def action_key(a: Action) -> tuple[object, ...]:
    """Everything that makes an action do something different (compiled templates compare by their text)."""
    return (a.name, a.path, tuple(sorted((k, str(v)) for k, v in a.params.items())),
            tuple(sorted(a.options.items())), a.order, tuple(sorted(a.families)), a.start_on_demand,
            tuple(sorted((phase, tuple(c.source for c in cmds)) for phase, cmds in a.commands.items())),
            a.batchset.source if a.batchset is not None else None)


@dataclass
class JailChange:
    """One jail whose actions differ. ``replaced``: old actions whose new version has the same name (they
    share kernel objects, so the old one goes first); ``gone``: old actions no longer there (they go after the
    new ones hold the bans); ``fresh``: new or changed actions that get every ban in force."""

    replaced: list[Action] = field(default_factory=list)
    gone: list[Action] = field(default_factory=list)
    fresh: list[Action] = field(default_factory=list)


@dataclass
class Plan:
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: dict[str, JailChange] = field(default_factory=dict)
    unchanged: list[str] = field(default_factory=list)

    def describe(self) -> str:
        parts = []
        if self.added:
            parts.append("jails added: " + ", ".join(self.added))
        if self.removed:
            parts.append("jails removed (their bans lifted): " + ", ".join(self.removed))
        for jail, ch in self.changed.items():
            old = sorted({a.name for a in (*ch.replaced, *ch.gone)})
            new = sorted({a.name for a in ch.fresh})
            parts.append(f"jail {jail}: actions {', '.join(old) or '(none)'} -> {', '.join(new) or '(none)'}")
        if self.unchanged:
            parts.append("unchanged: " + ", ".join(self.unchanged))
        return "; ".join(parts) or "no jails"

    def as_dict(self) -> dict[str, object]:
        return {"added": self.added, "removed": self.removed, "unchanged": self.unchanged,
                "changed": {j: {"from": sorted({a.name for a in (*c.replaced, *c.gone)}),
                                "to": sorted({a.name for a in c.fresh})} for j, c in self.changed.items()}}


def plan(old: Mapping[str, list[Action]], new: Mapping[str, list[Action]]) -> Plan:
    """Compare the running jails' actions with the new configuration's."""
    p = Plan()
    for jail in old:
        if jail not in new:
            p.removed.append(jail)
    for jail, acts in new.items():
        if jail not in old:
            p.added.append(jail)
            continue
        old_by = {a.name: a for a in old[jail]}
        new_by = {a.name: a for a in acts}
        ch = JailChange()
        for name, a in old_by.items():
            if name not in new_by:
                ch.gone.append(a)
            elif action_key(new_by[name]) != action_key(a):
                ch.replaced.append(a)
        for name, a in new_by.items():
            if name not in old_by or action_key(old_by[name]) != action_key(a):
                ch.fresh.append(a)
        if ch.gone or ch.replaced or ch.fresh:
            p.changed[jail] = ch
        else:
            p.unchanged.append(jail)
    return p
