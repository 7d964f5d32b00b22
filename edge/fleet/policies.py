"""Changing a model's scaling policy: the one way the admin API and the CLI both take."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from edge.fleet.catalogue import apply_changes
from edge.fleet.scaling import Policy, policy_changes, policy_view

if TYPE_CHECKING:
    from edge.db.models import LLM

__all__ = ["change_policy"]


async def change_policy(llm: LLM, changes: Mapping[str, Any], *, default_idle_ttl: float,
                        publish: Callable[[str], Awaitable[None]], actor: str) -> bool:
    """Apply ``changes`` to ``llm``'s policy; when something changed, save it, tell the
    workers (``publish("models")``) and append it to the audit log as ``actor``.
    Returns whether anything changed.

    Raises:
      ValueError: a setting unknown, of the wrong type or out of range (:func:`policy_changes`).
    """
    return await apply_changes(llm, policy_changes(changes, Policy.of(llm, default_idle_ttl)),
                               action="model.policy", view=policy_view, publish=publish,
                               actor=actor)
