"""``portal ledger …``: the ledger between Redis and SQL, for operators.

``drain`` writes what the ledger stream still holds into SQL now. ``reset-hot``
is for after a database restore: SQL went back in time while Redis kept the
live balances, so it first drains the stream into the restored database (those
entries are real), then drops Redis's copies (balances, credit markers, the key
mirror), which every worker reloads from SQL on first use, and the processes'
spools of settlements (they belong to the timeline the restore undid). SQL is then the
truth again; top-ups after the backup are replayed from Stripe (each credits
once) and usage after it is written off.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from edge.billing.ledger_writer import LedgerWriter
from edge.cli.runtime import CommandContext, fail, run_command
from edge.store import keys

if TYPE_CHECKING:
    from edge.store.hotstore import HotStore

__all__ = ["hot_patterns", "register"]


def hot_patterns(ns: str) -> list[str]:
    """``SCAN`` patterns of the Redis keys ``reset-hot`` drops from the namespace ``ns``."""
    return [keys.balance(ns, "*"), keys.applied(ns, "*"), keys.key_record(ns, "*"),
            keys.keys_mirrored(ns),
            keys.reservation(ns, "*"),  # and the open reservations' zset
            keys.limiter(ns, "*"), keys.cap(ns, "*"), keys.held(ns, "*"), keys.owed(ns, "*"),
            keys.generation(ns),  # the next process heals the namespace from the restored SQL
            keys.installation(ns)]  # the next process claims the namespace for this database


def register(commands: argparse._SubParsersAction) -> None:
    ledger = commands.add_parser("ledger", help="the ledger between Redis and SQL").add_subparsers(
        dest="ledger_command", metavar="ACTION", required=True)
    drain = ledger.add_parser("drain", help="write the pending ledger entries to SQL now")
    drain.set_defaults(func=lambda a: run_command(drain_cmd))
    reset = ledger.add_parser(
        "reset-hot", help="after a database restore: make SQL the truth again "
                          "(stop the edge and the workers first)")
    reset.add_argument("--yes", action="store_true", help="really do it")
    reset.set_defaults(func=lambda a: run_command(lambda c: reset_cmd(c, a), claim=False))


def _store(ctx: CommandContext) -> HotStore:
    if ctx.store is None:
        raise fail("no Redis answers: there is nothing to drain")
    return ctx.store


async def _drain(ctx: CommandContext, *, claim_all: bool = False) -> int:
    writer = LedgerWriter(_store(ctx), consumer="cli-drain")
    total = 0
    while count := await writer.drain_once(claim_idle_ms=0 if claim_all else None):
        total += count
    return total


async def drain_cmd(ctx: CommandContext) -> int:
    print(f"{await _drain(ctx)} ledger entries written")
    return 0


async def reset_cmd(ctx: CommandContext, args: argparse.Namespace) -> int:
    if not args.yes:
        raise fail("this drops Redis's balances and credit markers; stop the edge and the "
                    "workers, then run it again with --yes")
    from edge.db.models import Job, JobStatus

    waiting = await Job.filter(status__in=[JobStatus.QUEUED, JobStatus.RUNNING]).count()
    if waiting:
        raise fail(f"{waiting} jobs are queued or running and hold credit in Redis; let them "
                   "finish (or expire) first")
    drained = await _drain(ctx, claim_all=True)  # the writers are stopped: take theirs too
    store = _store(ctx)
    client = store.client
    dropped = 0
    for pattern in hot_patterns(store.ns):
        batch = [key async for key in client.scan_iter(pattern, count=1000)]
        for start in range(0, len(batch), 1000):
            dropped += await client.delete(*batch[start:start + 1000])
    await store.publish(keys.EVENT_KEYS)
    # The spools hold settlements of the timeline the restore undid: replaying them
    # on the restored SQL would charge usage after the backup, which is written off.
    spooled = _discard_spools(ctx.settings.data_path / "spool")
    await ctx.audit("ledger.reset-hot", f"namespace:{store.ns}", None, {
        "drained": drained, "redis_keys_dropped": dropped, "spool_files": spooled})
    print(f"{drained} ledger entries written to SQL, {dropped} Redis keys dropped, "
          f"{spooled} spool files discarded; balances now come from SQL")
    return 0


def _discard_spools(root: Path) -> int:
    """Delete the spool segments under ``root``; returns how many there were."""
    files = [path for path in root.rglob("*") if path.is_file()] if root.exists() else []
    for path in files:
        path.unlink(missing_ok=True)
    return len(files)
