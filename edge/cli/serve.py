"""``portal serve``: the edge, as N Sanic worker processes on one port."""

from __future__ import annotations

import argparse
import os
import shutil
from functools import partial

from edge.db import DatabaseUnavailable
from edge.settings import Settings
from edge.store.embedded import NoRedis, redis_for_database

__all__ = ["register", "serve"]


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("serve", help="run the edge (API, chat, pages)")
    parser.add_argument("--host", help="address to bind (default: PORTAL_HOST)")
    parser.add_argument("--port", type=int, help="port to bind (default: PORTAL_PORT)")
    parser.add_argument("--workers", type=int, help="worker processes (default: PORTAL_WORKERS)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    changes = {k: v for k, v in (("host", args.host), ("port", args.port),
                                 ("workers", args.workers)) if v is not None}
    return serve(settings.replace(**changes))


def serve(settings: Settings) -> int:
    """Run the edge until interrupted; starts an embedded Redis if none answers."""
    try:
        resolved = redis_for_database(settings, start=True)
    except (NoRedis, DatabaseUnavailable) as exc:
        print(f"portal: {exc}")
        return 1
    assert resolved.url is not None  # start=True: one answers, or NoRedis was raised
    settings = settings.replace(redis_url=resolved.url)
    os.environ["PORTAL_REDIS_URL"] = resolved.url  # what every child process must use
    _fresh_metrics_dir(settings)
    try:
        from sanic import Sanic
        from sanic.worker.loader import AppLoader

        from edge.app import create_app
        from edge.intake import PortalProtocol

        loader = AppLoader(factory=partial(create_app, settings))
        app = loader.load()
        # The protocol bounds the time to receive a request and the bodies held at once.
        app.prepare(host=settings.host, port=settings.port, workers=settings.workers,
                    access_log=False, motd=False, protocol=PortalProtocol)
        Sanic.serve(primary=app, app_loader=loader)
    finally:
        resolved.close()
    return 0


def _fresh_metrics_dir(settings: Settings) -> None:
    """Per-server directory for the workers' Prometheus samples, emptied at start."""
    directory = settings.data_path / "metrics" / str(settings.port)
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
