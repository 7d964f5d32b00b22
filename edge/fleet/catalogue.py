"""The catalogue: adding a model and changing its prices, context, kind or state, the one
way the admin API and ``portal models`` both take (a model's scaling policy is
:mod:`edge.fleet.policies`).

Every change is checked whole before anything is written (a bad value is a
:class:`CatalogueError` naming its field, and nothing changes). Then it is saved, told
to every worker (``publish("models")``: each reloads its routing table, so
``/v1/models`` shows it within a second) and appended to the audit log. Prices are
integer micro-dollars per 1M tokens; the callers read the operator's USD.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from edge import audit
from edge.db.models import LLM, ModelKind
from edge.fleet.scaling import Policy, policy_changes

__all__ = ["ADD_POLICY_FIELDS", "FIELDS", "MAX_CONTEXT", "MAX_PRICE", "CatalogueError",
           "add_model", "apply_changes", "catalogue_entry", "check_changes", "update_model"]

#: A model's catalogue fields besides its name (prices: micro-dollars per 1M tokens).
FIELDS = ("served_name", "input_price", "output_price", "context_length", "kind", "enabled")
#: The scaling settings that ``add_model`` also takes (the rest are the policy's alone).
ADD_POLICY_FIELDS = ("idle_ttl", "min_nodes")
#: The dearest price a model may have, micro-dollars per 1M tokens ($1,000,000): beyond it
#: a number is a typo, not a price.
MAX_PRICE = 10**12
#: The longest context a model may have, in tokens.
MAX_CONTEXT = 10_000_000
#: What a model added without these fields gets (``portal models add``'s defaults).
_DEFAULT_CONTEXT = 8192
#: Longest names, in characters (the columns' sizes).
_NAME_LENGTH, _SERVED_LENGTH = 128, 256

Publish = Callable[[str], Awaitable[None]]


async def apply_changes(llm: LLM, wanted: Mapping[str, Any], *, action: str,
                        view: Callable[[LLM], Any], publish: Publish, actor: str) -> bool:
    """Save the fields of ``wanted`` (checked already) that differ from ``llm``'s, tell
    every worker (``publish("models")``) and append ``action`` to the audit log with
    ``view`` of the model before and after; nothing at all when none differs. The one
    way a model's row changes, for its catalogue fields and its policy alike.

    Returns:
      Whether anything changed.
    """
    changed = {field: value for field, value in wanted.items() if getattr(llm, field) != value}
    if not changed:
        return False
    before = view(llm)
    await llm.update_from_dict(changed).save(update_fields=list(changed))
    await publish("models")
    await audit.record(actor, action, f"model:{llm.name}", before, view(llm))
    return True


class CatalogueError(ValueError):
    """A catalogue change that cannot be applied; ``param`` names the field at fault."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


def catalogue_entry(llm: LLM, *, also: tuple[str, ...] = ()) -> dict[str, Any]:
    """A model's catalogue fields as the audit log keeps them (prices in micro-dollars),
    with the columns named in ``also``."""
    entry = {"name": llm.name, **{field: getattr(llm, field) for field in (*FIELDS, *also)}}
    entry["kind"] = str(llm.kind)
    return entry


def _name(value: Any, field: str, longest: int) -> str:
    if not isinstance(value, str) or not value.strip():
        raise CatalogueError(f"'{field}' is a non-empty string.", field)
    text = value.strip()
    if len(text) > longest or not text.isprintable() or any(c.isspace() for c in text):
        raise CatalogueError(f"'{field}' is 1 to {longest} printable characters without "
                             "spaces.", field)
    return text


def _whole(value: Any, field: str, low: int, high: int, unit: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise CatalogueError(f"'{field}' is a whole number of {unit} from {low:,} to "
                             f"{high:,}.", field)
    return value


def check_changes(changes: Mapping[str, Any]) -> dict[str, Any]:
    """The catalogue fields ``changes`` sets, checked and normalised.

    Parameters:
      changes: fields of :data:`FIELDS`; ``input_price`` and ``output_price`` in
        micro-dollars per 1M tokens, ``context_length`` in tokens.

    Raises:
      CatalogueError: a field unknown, of the wrong type or out of range (the first).
    """
    cleaned: dict[str, Any] = {}
    for field, value in changes.items():
        if field == "served_name":
            cleaned[field] = _name(value, field, _SERVED_LENGTH)
        elif field in ("input_price", "output_price"):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise CatalogueError(f"'{field}' is a price: micro-dollars per 1M tokens.",
                                     field)
            if value > MAX_PRICE:
                raise CatalogueError(f"'{field}' is at most {MAX_PRICE // 10**6:,} USD per 1M "
                                     "tokens.", field)
            cleaned[field] = value
        elif field == "context_length":
            cleaned[field] = _whole(value, field, 1, MAX_CONTEXT, "tokens")
        elif field == "kind":
            if not isinstance(value, str) or value not in {kind.value for kind in ModelKind}:
                raise CatalogueError(f"'kind' is one of {', '.join(k.value for k in ModelKind)}.",
                                     field)
            cleaned[field] = ModelKind(value)
        elif field == "enabled":
            if not isinstance(value, bool):
                raise CatalogueError("'enabled' is true or false.", field)
            cleaned[field] = value
        elif field in (*ADD_POLICY_FIELDS, "max_nodes", "target_load", "load_metric",
                       "scale_out_after", "scale_in_after", "node_slots", "spot",
                       "on_demand_floor", "launch"):
            raise CatalogueError(f"'{field}' is a scaling setting: change it with the "
                                 "model's scaling policy.", field)
        else:
            raise CatalogueError(f"'{field}' is not a catalogue field; they are "
                                 f"{', '.join(FIELDS)}.", field)
    return cleaned


def _policy_part(given: Mapping[str, Any], llm: LLM | None,
                 default_idle_ttl: float) -> dict[str, Any]:
    """The scaling settings of :data:`ADD_POLICY_FIELDS` in ``given``, checked."""
    current = Policy.of(llm, default_idle_ttl) if llm is not None else Policy()
    cleaned: dict[str, Any] = {}
    for field in ADD_POLICY_FIELDS:
        if field in given:
            try:
                cleaned.update(policy_changes({field: given[field]}, current))
            except ValueError as exc:
                raise CatalogueError(f"{exc}.", field) from None
    try:
        policy_changes(cleaned, current)  # across fields: min_nodes within max_nodes
    except ValueError as exc:
        raise CatalogueError(f"{exc}.", "min_nodes") from None
    return cleaned


async def add_model(name: str, given: Mapping[str, Any], *, default_idle_ttl: float,
                    publish: Publish, actor: str) -> tuple[LLM, str]:
    """Add the model ``name``, or bring the one of that name to ``given``: idempotent, so
    that a playbook may run it on every converge.

    Parameters:
      name: the public name clients ask for.
      given: catalogue fields (:data:`FIELDS`, ``input_price`` and ``output_price``
        required) and scaling settings (:data:`ADD_POLICY_FIELDS`). ``served_name``
        defaults to ``name``, ``context_length`` to 8192 tokens, ``enabled`` to true;
        ``kind`` left out is ``generate`` for a new model and unchanged otherwise.
      default_idle_ttl: seconds, the idle TTL of a model whose own is not set.
      publish: tells every worker (``publish("models")``).
      actor: who the audit log names (``model.add`` or ``model.update``).

    Returns:
      The row and what happened to it: ``created``, ``updated`` or ``unchanged``.

    Raises:
      CatalogueError: a field is missing, unknown or bad; nothing changed.
    """
    name = _name(name, "name", _NAME_LENGTH)
    for field in ("input_price", "output_price"):
        if given.get(field) is None:
            raise CatalogueError(f"'{field}' is required.", field)
    catalogue = {"served_name": name, "context_length": _DEFAULT_CONTEXT, "enabled": True,
                 **{field: value for field, value in given.items()
                    if field not in ADD_POLICY_FIELDS and value is not None}}
    wanted = check_changes(catalogue)
    row = await LLM.get_or_none(name=name)
    wanted.update(_policy_part(given, row, default_idle_ttl))
    shown = tuple(field for field in ADD_POLICY_FIELDS if field in wanted)
    if row is None:
        row = await LLM.create(name=name, **wanted)
        await publish("models")
        await audit.record(actor, "model.add", f"model:{name}", None,
                           catalogue_entry(row, also=shown))
        return row, "created"
    updated = await apply_changes(row, wanted, action="model.update",
                                  view=lambda llm: catalogue_entry(llm, also=shown),
                                  publish=publish, actor=actor)
    return row, "updated" if updated else "unchanged"


async def update_model(llm: LLM, changes: Mapping[str, Any], *, publish: Publish,
                       actor: str) -> bool:
    """Change the catalogue fields ``changes`` names (only those); when something changed,
    save it, tell every worker and append it to the audit log (``model.update``).

    Returns:
      Whether anything changed.

    Raises:
      CatalogueError: a field unknown (a scaling setting included), of the wrong type or
        out of range; nothing changed.
    """
    return await apply_changes(llm, check_changes(changes), action="model.update",
                               view=catalogue_entry, publish=publish, actor=actor)
