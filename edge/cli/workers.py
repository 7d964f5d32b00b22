"""``portal worker`` (Dramatiq's worker over ``dramatiq_actors``) and ``portal scheduler``."""

from __future__ import annotations

import argparse
import logging
import os
import shutil

from edge.db import DatabaseUnavailable
from edge.settings import Settings
from edge.store.embedded import NoRedis, redis_for_database

__all__ = ["register"]


def register(commands: argparse._SubParsersAction) -> None:
    worker = commands.add_parser("worker", help="run background actors (node lifecycle, jobs)")
    worker.add_argument("--processes", type=int, help="default: PORTAL_WORKER_PROCESSES")
    worker.add_argument("--threads", type=int, help="default: PORTAL_WORKER_THREADS")
    worker.add_argument("--queues", nargs="*", help="only these queues "
                        "(lifecycle, jobs, maintenance); default: all")
    worker.set_defaults(func=run_worker)
    scheduler = commands.add_parser("scheduler", help="enqueue the periodic actors on their "
                                    "intervals (sync, health, idle stop, stuck jobs)")
    scheduler.set_defaults(func=run_scheduler)


def _environment() -> Settings | None:
    """Settings with the Redis actually in use, exported for child processes."""
    settings = Settings.from_env()
    try:
        resolved = redis_for_database(settings, start=False)
    except (NoRedis, DatabaseUnavailable) as exc:
        print(f"portal: {exc}")
        return None
    if resolved.url is None:
        print("portal: no usable Redis (none answers, or its namespace holds another "
              "database's balances); start `portal serve` or `portal dev` first, or set "
              "PORTAL_REDIS_URL")
        return None
    os.environ["PORTAL_REDIS_URL"] = resolved.url
    return settings.replace(redis_url=resolved.url)


def run_worker(args: argparse.Namespace) -> int:
    settings = _environment()
    if settings is None:
        return 1
    _serve_metrics(settings)
    from dramatiq.cli import main as dramatiq_main
    from dramatiq.cli import make_argument_parser

    # An idle consumer polls Redis with a backoff capped at this many ms; Dramatiq's
    # default (1 s) would add up to a second to every job after a quiet spell.
    os.environ.setdefault("dramatiq_worker_timeout", "100")
    argv = ["dramatiq_actors",
            "--processes", str(args.processes or settings.worker_processes),
            "--threads", str(args.threads or settings.worker_threads),
            "--worker-shutdown-timeout", "30000",
            # Spawned, not forked: a fresh interpreter takes the metrics directory when
            # it first imports prometheus_client (this one imported it already).
            "--use-spawn"]
    if args.queues:
        argv += ["--queues", *args.queues]
    return dramatiq_main(make_argument_parser().parse_args(argv)) or 0


def _serve_metrics(settings: Settings) -> None:
    """Export the worker processes' metrics (a job is a metered call like any other).

    The processes write their samples to a directory of this worker's own; this
    process serves their sum on ``worker_metrics_port``, as ``/metrics`` does for
    the edge's workers.
    """
    directory = settings.data_path / "metrics" / f"worker-{os.getpid()}"
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    if not settings.worker_metrics_port:
        return
    from prometheus_client import CollectorRegistry, multiprocess, start_http_server

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(directory))
    try:
        start_http_server(settings.worker_metrics_port, addr=settings.host, registry=registry)
    except OSError as exc:
        logging.getLogger(__name__).warning(
            "worker metrics not served on port %s: %s", settings.worker_metrics_port, exc)


def run_scheduler(args: argparse.Namespace) -> int:
    settings = _environment()
    if settings is None:
        return 1
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from dramatiq_actors.scheduler import run_scheduler as schedule

    schedule(settings)
    return 0
