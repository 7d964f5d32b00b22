"""Mailing a contact message to the operator, with the standard library's smtplib.

smtplib blocks, so it runs in a thread (:func:`asyncio.to_thread`) with a timeout on
every socket operation. Every failure is answered as its text, for the inbox to keep.
"""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formataddr, make_msgid

from edge.db.models import ContactMessage
from edge.settings import Settings

__all__ = ["compose", "send"]


def compose(settings: Settings, row: ContactMessage) -> EmailMessage:
    """The mail: to the operator, answerable to the visitor."""
    mail = EmailMessage()
    mail["Subject"] = f"Contact form: {row.name}"
    mail["From"] = settings.smtp_from or settings.contact_to
    mail["To"] = settings.contact_to
    mail["Reply-To"] = formataddr((row.name, row.email))
    mail["Message-ID"] = make_msgid(f"contact-{row.id}")
    mail.set_content(f"{row.message}\n\n-- \nFrom {row.name} <{row.email}>, address "
                     f"{row.client_ip or 'unknown'}, at {row.created_at:%Y-%m-%d %H:%M:%S} "
                     f"UTC; message {row.id} of `portal contact list`.\n")
    return mail


def _deliver(settings: Settings, mail: EmailMessage) -> None:
    with smtplib.SMTP(settings.smtp_host, settings.smtp_port,
                      timeout=settings.smtp_timeout) as smtp:
        if settings.smtp_starttls:
            smtp.starttls(context=ssl.create_default_context())
        if settings.smtp_user:
            smtp.login(settings.smtp_user, settings.smtp_password)
        smtp.send_message(mail)


async def send(settings: Settings, row: ContactMessage) -> str:
    """Mail ``row``; answers the error's text, or ``""`` when the server took it."""
    try:
        await asyncio.to_thread(_deliver, settings, compose(settings, row))
    except (smtplib.SMTPException, OSError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}"[:500] or type(exc).__name__
    return ""
