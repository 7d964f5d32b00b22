"""``/contact``: a visitor writes to the operator (:mod:`edge.contact`).

The form is checked in this order, and each refusal shows it again with the fields
kept and stores nothing: CSRF (as every form), the honeypot and the signed stamp, the
fields, then ``PORTAL_CONTACTS_PER_HOUR`` per client address (a Redis counter per
address per hour, as sign-ups are limited).
"""

from __future__ import annotations

from sanic import HTTPResponse, Request

from edge.contact.form import TRAP, ContactForm, FormRefused, check_stamp, stamp
from edge.contact.inbox import take
from edge.identity.csrf import check_csrf
from edge.store import keys as redis_keys
from edge.web.common import bp, client_address, count_this_hour, form_field, render

__all__: list[str] = []


async def _form(request: Request, *, status: int = 200, form: ContactForm | None = None,
                flash: str | None = None, flash_kind: str = "error") -> HTTPResponse:
    return await render(request, "contact.html", status=status,
                        form=form or ContactForm("", "", ""),
                        stamp=stamp(request.app.ctx.portal.pepper), trap=TRAP,
                        flash=flash, flash_kind=flash_kind)


@bp.get("/contact")
async def contact_form(request: Request):
    return await _form(request)


@bp.post("/contact")
async def contact(request: Request):
    await check_csrf(request)
    portal = request.app.ctx.portal
    form = ContactForm(form_field(request, "name"), form_field(request, "email"),
                       form_field(request, "message"))
    try:
        if form_field(request, TRAP):
            raise FormRefused("Your message looked automated and was not sent; if you are "
                              "a person, leave every field you cannot see empty and send it "
                              "again.")
        check_stamp(portal.pepper, form_field(request, "stamp"))
        form.check()
    except FormRefused as exc:
        return await _form(request, status=400, form=form, flash=str(exc))
    if await count_this_hour(request, redis_keys.contacts) > portal.settings.contacts_per_hour:
        response = await _form(request, status=429, form=form,
                               flash="Too many messages from this address; please try "
                                     "again in an hour.")
        response.headers["retry-after"] = "3600"
        return response
    await take(portal.settings, form, client_address(request))
    return await _form(request, flash="Thank you: your message was received, and we will "
                                      "answer by email.", flash_kind="ok")
