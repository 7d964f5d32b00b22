"""Reading the ledger as the operator searches it: newest first, a page at a time.

The rows are append-only and their ids only grow, so a page ends at a row's id and the
next one starts below it (``before``): a row written meanwhile never shifts a page,
and no row is shown twice or skipped. What a reference looks like tells what made the
row (``usage:<request id>``, ``checkout:<session id>``, ``refund:…``; see
:mod:`edge.payments.handlers`), so searching by its start finds a family of rows.
"""

from __future__ import annotations

import dataclasses

from edge.db.models import LedgerEntry, LedgerKind

__all__ = ["LedgerPage", "search_ledger"]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class LedgerPage:
    """One page of a search: its rows, newest first, and whether older ones match."""

    rows: list[LedgerEntry]
    has_more: bool

    @property
    def next_before(self) -> int | None:
        """The ``before`` of the next page (None: this is the last)."""
        return self.rows[-1].id if self.has_more and self.rows else None


async def search_ledger(*, reference: str | None = None, reference_prefix: str | None = None,
                        account: int | None = None, kind: LedgerKind | None = None,
                        before: int | None = None, limit: int = 100) -> LedgerPage:
    """The ledger rows that match every filter given, newest (highest id) first.

    Parameters:
      reference: exactly this reference (references are unique: one row at most).
      reference_prefix: references that start with this.
      account: one account's rows (its id).
      kind: rows of this kind.
      before: rows older than this row id (the last row of the page before).
      limit: at most this many rows (1 to 500).
    """
    query = LedgerEntry.all().order_by("-id")
    if reference is not None:
        query = query.filter(reference=reference)
    if reference_prefix is not None:
        query = query.filter(reference__startswith=reference_prefix)
    if account is not None:
        query = query.filter(account_id=account)
    if kind is not None:
        query = query.filter(kind=kind)
    if before is not None:
        query = query.filter(id__lt=before)
    limit = max(1, min(500, limit))
    rows = list(await query.limit(limit + 1))
    return LedgerPage(rows=rows[:limit], has_more=len(rows) > limit)
