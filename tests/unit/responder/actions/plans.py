"""Test helpers: an action's plan for a phase as the argv lists it runs, and the set a ban goes to."""

from __future__ import annotations

from collections.abc import Mapping

from portsentinel.responder.actions.action import Action, SetElement, Steps
from portsentinel.responder.actions.variables import BanVars


def argv(action: Action, phase: str, ban: Mapping[str, object] | None = None) -> list[list[str]]:
    """The commands of ``phase`` (never the batched form), with ``ban`` given by variable name."""
    plan = action.plan(phase, None if ban is None else BanVars.parse(ban), batch=False)
    assert isinstance(plan, Steps)
    return [step.argv for step in plan.steps]


def set_name(action: Action, ban: Mapping[str, object]) -> str | None:
    """The nft set the ban's element goes to, or None when the action's ban is not a set element."""
    plan = action.plan("actionban", BanVars.parse(ban))
    return plan.set if isinstance(plan, SetElement) else None
