"""What the contact form must hold before a message is taken: its fields, a signed stamp.

Spam is kept out without a CAPTCHA. A hidden field (:data:`TRAP`) that people never
see must stay empty, and the form carries the time it was shown, signed with the
portal's pepper: a form sent back sooner than :data:`MIN_SECONDS` after it was shown
(a script, not a person) or later than :data:`MAX_SECONDS` is refused, politely, with
the fields kept so that a person can send it again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import time
import unicodedata

__all__ = ["MAX_MESSAGE", "MAX_SECONDS", "MIN_SECONDS", "TRAP", "ContactForm",
           "FormRefused", "check_stamp", "stamp"]

#: Seconds a person takes at least to fill the form in.
MIN_SECONDS = 3
#: Seconds a shown form stays good for.
MAX_SECONDS = 24 * 3600
#: Longest message, in characters.
MAX_MESSAGE = 5000
#: Longest name and address, in characters (an address's limit in RFC 5321).
MAX_NAME, MAX_EMAIL = 100, 254
#: The honeypot field's name: a field a form-filling script fills in.
TRAP = "website"
#: What the stamp's signature is for (the pepper signs other things too).
_PURPOSE = b"contact-form:"


class FormRefused(ValueError):
    """The form cannot be taken; the message says why, to the person who sent it."""


def stamp(pepper: bytes, now: float | None = None) -> str:
    """The signed time a form is shown: ``<unix seconds>.<signature>``."""
    issued = str(int(time.time() if now is None else now))
    return f"{issued}.{_sign(pepper, issued)}"


def _sign(pepper: bytes, issued: str) -> str:
    return hmac.new(pepper, _PURPOSE + issued.encode(), hashlib.sha256).hexdigest()[:32]


def check_stamp(pepper: bytes, given: str, now: float | None = None) -> None:
    """Refuse a form shown too short a time ago, too long ago, or not by this portal."""
    issued, _, signature = given.partition(".")
    if not (issued.isascii() and issued.isdigit() and len(issued) < 12
            and hmac.compare_digest(signature.encode(), _sign(pepper, issued).encode())):
        raise FormRefused("This form did not come from this page; reload it and send "
                          "your message again.")
    age = (time.time() if now is None else now) - int(issued)
    if age < MIN_SECONDS:
        raise FormRefused("That was quicker than a person types; wait a few seconds and "
                          "send it again.")
    if age > MAX_SECONDS:
        raise FormRefused("This form is more than a day old; send your message again "
                          "from this fresh one.")


def _has_control(text: str, allowed: str = "") -> bool:
    return any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") and c not in allowed
               for c in text)


@dataclasses.dataclass(frozen=True)
class ContactForm:
    """The fields as sent (stripped); :meth:`check` says what is wrong with them."""

    name: str
    email: str
    message: str

    def check(self) -> None:
        """Raises :class:`FormRefused` naming the first field at fault."""
        if not self.name or not self.email or not self.message:
            raise FormRefused("Give your name, your email address and a message.")
        if len(self.name) > MAX_NAME or _has_control(self.name):
            raise FormRefused(f"Your name must be at most {MAX_NAME} characters of text.")
        local, at, domain = self.email.rpartition("@")
        if (not at or not local or "." not in domain or len(self.email) > MAX_EMAIL
                or _has_control(self.email) or any(c.isspace() for c in self.email)):
            raise FormRefused("Give an email address we can answer, like you@example.com.")
        if len(self.message) > MAX_MESSAGE:
            raise FormRefused(f"Your message is {len(self.message):,} characters long; "
                              f"the most is {MAX_MESSAGE:,}.")
        if _has_control(self.message, allowed="\n\r\t"):
            raise FormRefused("Your message holds control characters; send it as plain text.")
