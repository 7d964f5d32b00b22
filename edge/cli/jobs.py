"""``portal jobs …``: see queued inference jobs."""

from __future__ import annotations

import argparse
import json

from edge.cli.runtime import CommandContext, fail, print_table, run_command
from edge.db.models import Job
from edge.jobs.store import job_view

__all__ = ["register"]


def register(commands: argparse._SubParsersAction) -> None:
    jobs = commands.add_parser("jobs", help="queued inference jobs").add_subparsers(
        dest="jobs_command", metavar="ACTION", required=True)
    listing = jobs.add_parser("list", help="recent jobs")
    listing.add_argument("--status", choices=["queued", "running", "succeeded", "failed",
                                              "expired"])
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=lambda a: run_command(lambda c: list_jobs(c, a)))
    show = jobs.add_parser("show", help="one job, with its answer")
    show.add_argument("job_id")
    show.set_defaults(func=lambda a: run_command(lambda c: show_job(c, a)))


async def list_jobs(ctx: CommandContext, args: argparse.Namespace) -> int:
    query = Job.all().order_by("-created_at").limit(args.limit)
    if args.status:
        query = query.filter(status=args.status)
    rows = [{**job_view(j), "key_id": j.key_id} for j in await query]
    for row in rows:
        row.pop("result", None)
    print_table(rows, ["id", "status", "model", "key_id", "attempts", "created_at"],
                as_json=args.json)
    return 0


async def show_job(ctx: CommandContext, args: argparse.Namespace) -> int:
    job = await Job.get_or_none(id=args.job_id)
    if job is None:
        raise fail(f"no job {args.job_id}")
    print(json.dumps({**job_view(job), "key_id": job.key_id}, indent=2))
    return 0
