"""The key form of the account pages: what a person typed, as :class:`KeySettings`.

One form makes and edits keys. Its fields are kept as typed (to show them again
beside the error), then read into settings; every value that cannot be read is a
:class:`~edge.identity.accounts.KeySettingsError` naming its field, like the checks
of :mod:`edge.identity.accounts` that follow, so a bad form changes nothing.

Editing passes only the fields whose value differs from the key's: a field left as
it was shown is left as it is (an expiry set to the second by the CLI survives a
form that shows it as a date).
"""

from __future__ import annotations

import dataclasses
import re
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from edge.billing.money import format_usd, parse_usd
from edge.db.models import CapReset, KeyScope
from edge.identity.accounts import KeySettings, KeySettingsError

if TYPE_CHECKING:
    from edge.db.models import ApiKey

__all__ = ["FIELD_LABELS", "KeyForm", "describe_error", "expiry_of", "expiry_text", "grace_of"]

#: How the pages name a setting in an error.
FIELD_LABELS = {
    "name": "Name", "scope": "Scope", "models": "Models", "routes": "Routes",
    "rpm": "Requests per minute", "tpm": "Tokens per minute", "cap": "Credit cap",
    "cap_reset": "Cap resets", "expires_at": "Expires", "grace": "Grace period",
    "account": "Keys", "key": "Key", "credit": "Credit",
}

_WHOLE = re.compile(r"[0-9]{1,15}")
_SECONDS = re.compile(r"[0-9]{1,9}(\.[0-9]{1,3})?")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def describe_error(exc: KeySettingsError) -> str:
    """The flash for a refused setting: the field's name, then what is wrong."""
    return f"{FIELD_LABELS.get(exc.param, exc.param)}: {exc.message}"


def _whole(text: str, field: str) -> int:
    if not _WHOLE.fullmatch(text):
        raise KeySettingsError(f"{field} is a whole number, not {text[:20]!r}." if text
                               else f"{field} is a whole number; it is empty.", field)
    return int(text)


def expiry_of(text: str) -> datetime | None:
    """A typed expiry: a date (the key works to the end of that UTC day), an ISO 8601
    time (UTC without an offset), or nothing (it never expires)."""
    if not text:
        return None
    try:
        if _DATE.fullmatch(text):
            return datetime.fromisoformat(text).replace(tzinfo=UTC) + timedelta(days=1)
        moment = datetime.fromisoformat(text)
    except (ValueError, OverflowError):
        raise KeySettingsError(f"{text[:40]!r} is not a date (YYYY-MM-DD).",
                               "expires_at") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def expiry_text(moment: datetime | None) -> str:
    """An expiry as the form shows it: the last day the key works (see :func:`expiry_of`)."""
    if moment is None:
        return ""
    return (moment.astimezone(UTC) - timedelta(microseconds=1)).date().isoformat()


def grace_of(text: str) -> float:
    """Seconds a rotated-out secret keeps working; empty is none."""
    if not text:
        return 0
    if not _SECONDS.fullmatch(text):
        raise KeySettingsError(f"grace is a number of seconds, not {text[:20]!r}.", "grace")
    return float(text)


@dataclasses.dataclass
class KeyForm:
    """The key form's fields, as typed (or as a key's settings show them)."""

    name: str = ""
    scope: str = "api"
    all_models: bool = True
    models: list[str] = dataclasses.field(default_factory=list)
    all_routes: bool = True
    routes: list[str] = dataclasses.field(default_factory=list)
    rpm: str = ""
    tpm: str = ""
    cap: str = ""
    cap_reset: str = "never"
    expires: str = ""

    @classmethod
    def of_key(cls, row: ApiKey) -> KeyForm:
        """A key's settings, as its edit form is filled in."""
        return cls(name=row.name, scope=str(row.scope), all_models=row.models is None,
                   models=list(row.models or []), all_routes=row.routes is None,
                   routes=list(row.routes or []), rpm=str(row.rpm), tpm=str(row.tpm),
                   cap="" if row.cap is None else format_usd(row.cap),
                   cap_reset=str(row.cap_reset), expires=expiry_text(row.expires_at))

    @classmethod
    def blank(cls, *, rpm: int, tpm: int) -> KeyForm:
        """The form for a new key: an API key with the portal's default limits."""
        return cls(rpm=str(rpm), tpm=str(tpm))

    @classmethod
    def of_form(cls, field: Any, values: Any) -> KeyForm:
        """What was posted; ``field(name)`` is one value, ``values(name)`` a repeated one."""
        return cls(name=field("name"), scope=field("scope") or "api",
                   all_models=bool(field("all_models")), models=values("models"),
                   all_routes=bool(field("all_routes")), routes=values("routes"),
                   rpm=field("rpm"), tpm=field("tpm"), cap=field("cap"),
                   cap_reset=field("cap_reset") or "never", expires=field("expires"))

    def settings(self) -> dict[str, Any]:
        """Every field read into a setting's value (models/routes None: all).

        Raises:
          KeySettingsError: a value that cannot be read (nothing is checked yet
            against the account: :meth:`KeySettings.check` does that).
        """
        out: dict[str, Any] = {
            "name": self.name,
            "scope": self.scope,
            "models": None if self.all_models else sorted(set(self.models)),
            "routes": None if self.all_routes else sorted(set(self.routes)),
            "rpm": _whole(self.rpm, "rpm"),
            "tpm": _whole(self.tpm, "tpm"),
            "cap_reset": self.cap_reset,
            "expires_at": expiry_of(self.expires),
        }
        if out["models"] == []:
            raise KeySettingsError("tick at least one model, or allow every model.",
                                   "models")
        if out["routes"] == []:
            raise KeySettingsError("tick at least one route, or allow every route.",
                                   "routes")
        if self.scope not in (KeyScope.MANAGE, KeyScope.API):
            raise KeySettingsError("scope is 'manage' or 'api'.", "scope")
        if self.cap_reset not in {str(c) for c in CapReset}:
            raise KeySettingsError("cap_reset is daily, weekly, monthly or never.",
                                   "cap_reset")
        try:
            out["cap"] = parse_usd(self.cap) if self.cap else None
        except ValueError:
            raise KeySettingsError(f"the cap is an amount in USD, like 5 or 2.50, not "
                                   f"{self.cap[:20]!r}.", "cap") from None
        return out

    def for_create(self) -> KeySettings:
        return KeySettings(**self.settings())

    def for_update(self, row: ApiKey) -> KeySettings:
        """Only what differs from the key as its form shows it."""
        wanted = self.settings()
        shown = {
            "name": row.name, "scope": str(row.scope),
            "models": None if row.models is None else sorted(set(row.models)),
            "routes": None if row.routes is None else sorted(set(row.routes)),
            "rpm": row.rpm, "tpm": row.tpm, "cap": row.cap, "cap_reset": str(row.cap_reset),
            # as shown: the day, so that an exact moment set elsewhere stays when kept
            "expires_at": expiry_of(expiry_text(row.expires_at)),
        }
        return KeySettings(**{name: value for name, value in wanted.items()
                              if value != shown[name]})
