"""The operators' audit log: one function every admin action calls, and the reading of it.

Each change an operator makes, through the admin API (actor ``admin-api``), the CLI
(``cli``) or later the console (``console:<who>``), appends one row: the action, its
target (``kind:id``, such as ``node:3`` or ``model:llama``), and the target before and
after as JSON. Rows are never updated or deleted (:class:`edge.db.models.AuditEntry`
refuses to); nothing here or elsewhere offers to.
"""

from __future__ import annotations

import json
from typing import Any

from edge.db.models import AuditEntry

__all__ = ["ADMIN_API", "CLI", "entry_view", "recent", "record"]

#: The actor of a change made through the admin API.
ADMIN_API = "admin-api"
#: The actor of a change made by a ``portal`` command.
CLI = "cli"


def _plain(value: Any) -> Any:
    """``value`` as plain JSON (times and enums as strings), so that every row reads back."""
    return None if value is None else json.loads(json.dumps(value, default=str))


async def record(actor: str, action: str, target: str, before: Any = None,
                 after: Any = None) -> AuditEntry:
    """Append what ``actor`` did: ``action`` on ``target``, from ``before`` to ``after``
    (None: it did not exist, or no longer does). Never a secret in either."""
    return await AuditEntry.create(actor=actor[:128], action=action[:64], target=target[:200],
                                   before=_plain(before), after=_plain(after))


async def recent(*, target: str | None = None, action: str | None = None,
                 limit: int = 100) -> list[AuditEntry]:
    """The newest rows first, of one target or one action when given."""
    query = AuditEntry.all().order_by("-id")
    if target:
        query = query.filter(target=target)
    if action:
        query = query.filter(action=action)
    return list(await query.limit(limit))


def entry_view(row: AuditEntry) -> dict[str, Any]:
    """A row as ``GET /admin/audit`` and ``portal audit list`` show it."""
    return {"id": row.id, "actor": row.actor, "action": row.action, "target": row.target,
            "before": row.before, "after": row.after,
            "created_at": row.created_at.isoformat()}
