"""A per-process journal of settlements, so that no usage is lost with Redis.

Redis's ledger stream is where settlements wait for SQL; if Redis loses it (a
restart without persistence, a restore, a failover) before the bookkeeper copied
it, the usage would be lost and the answers given free. So every process that
settles also appends each settlement to its own spool on local disk::

    <data_dir>/spool/<owner>/<unix seconds>.jsonl    one JSON record a line

A record is ``{"k": kind, "gen": generation, "ref": reference, "entry": {...}}``,
``entry`` being a ledger stream entry's wire fields (:mod:`edge.billing.entries`)
and ``ref`` its reference (``usage:<request id>``):

- ``done``: the settlement ran in Redis (in generation ``gen``); ``entry`` is
  the stream entry it wrote;
- ``owed``: the reservation it settles vanished with an older generation of
  Redis: the usage must still be charged (``entry`` says what);
- ``pending``: Redis did not answer; the owner retries it, and the drainer
  settles it if the owner dies first (``resv`` holds the settle's arguments).

The :class:`SpoolDrainer` (in the bookkeeper, for every spool of its host) reads
closed segments: a record whose reference SQL holds is done with; a ``done``
record of an older generation, or an ``owed`` one, was lost with Redis and is
charged again through ``replay.lua`` (once per reference, never below zero); a
``pending`` record of a dead owner is settled. A segment is deleted once SQL
holds all of it. Records are written by a thread every 20 ms and fsynced every
second: a process killed loses at most its last 20 ms (which Redis's stream also
holds), a power cut at most the last second.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from edge.billing.entries import Entry, EntryError, UsageEntry, decode, encode
from edge.store.hotstore import RedisUnavailable

if TYPE_CHECKING:
    from edge.billing.reservations import Billing

__all__ = ["Spool", "SpoolDrainer"]

log = logging.getLogger(__name__)

#: Seconds between two writes of the queued lines (what a SIGKILL may lose of a
#: process's spool: its settlements are in Redis's stream too).
WRITE_INTERVAL = 0.02
#: Seconds a segment is written to before the next one starts.
SEGMENT_SECONDS = 5.0
#: Seconds after its last write before the drainer reads a segment.
CLOSED_AFTER = 2 * SEGMENT_SECONDS
#: Seconds a pending settlement is left to its owner before the drainer takes it.
PENDING_GRACE = 30.0


class Spool:
    """Appends one process's settlements to its own spool directory.

    The event loop only queues a line (microseconds); a writer thread writes the
    queue every :data:`WRITE_INTERVAL` seconds, fsyncs once a second and starts a
    new segment every :data:`SEGMENT_SECONDS`, so no disk wait ever lands on a
    request (an fsync on the loop cost a tenth of a millisecond at the median).

    Parameters:
      root: ``<data_dir>/spool``.
      owner: this process's name (the directory's name).
    """

    def __init__(self, root: Path, owner: str) -> None:
        self.directory = root / owner.replace("/", "_")
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lines: collections.deque[str] = collections.deque()
        self._wake = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._write_loop, name="spool-writer",
                                        daemon=True)
        self._thread.start()

    def append(self, kind: str, generation: str, entry: Entry, **extra: Any) -> None:
        """Queue a record: ``kind`` (done, owed, pending), the generation it belongs to,
        the entry, and ``extra`` fields (a pending record's ``resv``)."""
        record = {"k": kind, "gen": generation, "ref": entry.reference, "entry": encode(entry),
                  **extra}
        self._lines.append(json.dumps(record, separators=(",", ":"), default=str) + "\n")
        if not self._wake.is_set():
            self._wake.set()

    def flush(self, timeout: float = 5.0) -> None:
        """Wait until everything appended so far is written (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        self._wake.set()
        while self._lines and time.monotonic() < deadline:
            time.sleep(0.005)

    def _write_loop(self) -> None:
        file: Any = None
        opened_at = synced_at = 0.0
        dirty = False
        while True:
            # Asleep until something is queued (or a second passed, for the fsync);
            # then a moment more, so that one write carries a batch.
            if self._wake.wait(1.0) and not self._closed:
                time.sleep(WRITE_INTERVAL)
            self._wake.clear()
            now = time.monotonic()
            try:
                if self._lines:
                    if file is None or now - opened_at > SEGMENT_SECONDS:
                        if file is not None:
                            os.fsync(file.fileno())
                            file.close()
                        file = open(self.directory / f"{time.time():.6f}.jsonl", "a",
                                    encoding="utf-8")
                        opened_at = now
                    batch = []
                    while self._lines:
                        batch.append(self._lines.popleft())
                    file.write("".join(batch))
                    file.flush()
                    dirty = True
                if file is not None and dirty and (now - synced_at > 1.0 or self._closed):
                    os.fsync(file.fileno())
                    synced_at, dirty = now, False
            except OSError:
                log.exception("spool: could not write %s", self.directory)
            if self._closed and not self._lines:
                if file is not None:
                    file.close()
                return

    def close(self) -> None:
        """Write what is queued, fsync, and stop the writer."""
        self._closed = True
        self._wake.set()
        self._thread.join(10)


class SpoolDrainer:
    """Makes sure every spooled settlement reaches SQL, exactly once.

    Parameters:
      root: ``<data_dir>/spool`` (every process of the host writes below it).
      billing: settles and replays through the hot store.
      generation: returns the hot store's current generation (None while healing).
    """

    def __init__(self, root: Path, billing: Billing, generation) -> None:
        self.root = root
        self.billing = billing
        self.generation = generation

    async def drain_once(self, *, closed_after: float = CLOSED_AFTER,
                         pending_grace: float = PENDING_GRACE) -> int:
        """Handle every closed segment once; returns the records charged or settled here."""
        current = await self.generation()
        if current is None:
            return 0  # healing: the stream is being written to SQL; look again later
        now = time.time()
        handled = 0
        for segment in sorted(self.root.glob("*/*.jsonl")):
            try:
                age = now - segment.stat().st_mtime
            except FileNotFoundError:
                continue
            if age < closed_after:
                continue
            records = _read(segment)
            confirmed = await _in_sql(records)
            left = 0
            for record in records:
                if record.get("bad"):
                    left += 1  # kept for an operator: it never decoded
                    continue
                if record["ref"] in confirmed:
                    continue
                kind = record["k"]
                if kind == "done" and record["gen"] == current:
                    left += 1  # the ledger writer has not copied it yet
                elif kind == "pending" and age < pending_grace:
                    left += 1  # its owner is still retrying it
                else:
                    handled += await self._charge(record, current)
                    left += 1  # gone once SQL holds it (next round)
            if not left:
                segment.unlink(missing_ok=True)
        return handled

    async def _charge(self, record: dict[str, Any], current: str) -> int:
        entry: Entry = record["entry"]
        if record["k"] == "pending":
            if not isinstance(entry, UsageEntry):
                raise TypeError(f"a pending settlement of a {entry.TYPE} entry: {record!r}")
            resv = record["resv"]
            outcome = await self.billing.settle_amount(
                int(resv["cost"]), int(resv["tokens"]), entry, generation=record["gen"],
                spool=False)
            return int(outcome.settled)
        return int(await self.billing.replay(entry))

    async def run(self, stop: asyncio.Event, interval: float = 2.0) -> None:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), interval)
                return
            except TimeoutError:
                pass
            try:
                await self.drain_once()
            except asyncio.CancelledError:
                raise
            except RedisUnavailable as exc:
                log.warning("spool drainer: Redis unavailable (%s); retrying", exc)
            except Exception:
                log.exception("spool drainer: round failed; retrying")


def _read(segment: Path) -> list[dict[str, Any]]:
    """The records of a segment, each ``entry`` decoded (or the record marked ``bad``)."""
    records = []
    for line in segment.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a torn last line (a crash mid-write): it never settled
        if isinstance(record, dict) and "ref" in record and "entry" in record:
            try:
                record["entry"] = decode(record["entry"])
            except (EntryError, AttributeError) as exc:
                log.error("spool: %s holds a record that does not decode (%s); keeping the "
                          "segment", segment, exc)
                record["bad"] = True
            records.append(record)
    return records


async def _in_sql(records: list[dict[str, Any]]) -> set[str]:
    """References of ``records`` that SQL already holds."""
    from edge.db.models import LedgerEntry, UsageRecord

    records = [r for r in records if not r.get("bad")]
    usage = [r["ref"] for r in records if isinstance(r["entry"], UsageEntry)]
    credits = [r["ref"] for r in records if not isinstance(r["entry"], UsageEntry)]
    found: set[str] = set()
    # A flat values_list is a list of values; Tortoise types it as a list of tuples.
    for start in range(0, len(usage), 500):
        rids = [ref.removeprefix("usage:") for ref in usage[start:start + 500]]
        found |= {f"usage:{rid}" for rid in cast(list[str], await UsageRecord.filter(
            request_id__in=rids).values_list("request_id", flat=True))}
    for start in range(0, len(credits), 500):
        found |= set(cast(list[str], await LedgerEntry.filter(
            reference__in=credits[start:start + 500]).values_list("reference", flat=True)))
    return found
