"""The inbox: a contact message is stored first, then mailed, and the outcome kept.

A message is never lost to a mail server that is down: its row exists before the
mail is tried, and says afterwards when it was mailed (``mailed_at``) or why not
(``mail_error``). With no ``PORTAL_SMTP_HOST`` messages are only stored.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from edge.contact import mail
from edge.contact.form import ContactForm
from edge.db.models import ContactMessage
from edge.settings import Settings

__all__ = ["message_view", "recent", "take"]


async def take(settings: Settings, form: ContactForm, client_ip: str) -> ContactMessage:
    """Store a checked message, then mail it to the operator when SMTP is set."""
    row = await ContactMessage.create(name=form.name, email=form.email, message=form.message,
                                      client_ip=client_ip[:64])
    if not settings.smtp_host:
        return row
    error = await mail.send(settings, row)
    if error:
        row.mail_error = error
        await row.save(update_fields=["mail_error"])
    else:
        row.mailed_at, row.mail_error = datetime.now(UTC), ""
        await row.save(update_fields=["mailed_at", "mail_error"])
    return row


async def recent(limit: int = 100) -> list[ContactMessage]:
    """The newest messages first."""
    return list(await ContactMessage.all().order_by("-id").limit(limit))


def message_view(row: ContactMessage) -> dict[str, Any]:
    """A message as ``GET /admin/contact`` and ``portal contact list`` show it."""
    return {"id": row.id, "name": row.name, "email": row.email, "message": row.message,
            "client_ip": row.client_ip, "created_at": row.created_at.isoformat(),
            "mailed_at": row.mailed_at.isoformat() if row.mailed_at else None,
            "mail_error": row.mail_error}
