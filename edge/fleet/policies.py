"""Changing a model's scaling policy: the one way the admin API and the CLI both take."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from edge import audit
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
    cleaned = policy_changes(changes, Policy.of(llm, default_idle_ttl))
    changed = {name: value for name, value in cleaned.items() if getattr(llm, name) != value}
    if not changed:
        return False
    before = policy_view(llm)
    await llm.update_from_dict(changed).save(update_fields=list(changed))
    await publish("models")
    await audit.record(actor, "model.policy", f"model:{llm.name}", before, policy_view(llm))
    return True
