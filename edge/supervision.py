"""Brings back an edge worker that died (OOM killer, a segfault in a C extension).

Sanic's worker manager restarts workers when asked, but does not notice one that
was killed. A daemon thread in the main process watches the workers and, for one
that exited abnormally, asks the manager through its own monitor channel, the
same way ``app.m.restart()`` does from inside a worker.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from sanic import Sanic

__all__ = ["watch_workers"]

log = logging.getLogger(__name__)

#: Seconds between two looks at the workers.
INTERVAL = 1.0
#: Seconds between two restarts of the same worker (no tight crash loop).
BACKOFF = 5.0


def watch_workers(app: Sanic) -> None:
    """``main_process_ready`` listener: start the watchdog thread."""
    threading.Thread(target=_watch, args=(app.manager,), name="worker-watchdog",
                     daemon=True).start()


def _watch(manager: Any) -> None:
    restarted_at: dict[str, float] = {}
    while True:
        time.sleep(INTERVAL)
        if getattr(manager, "_shutting_down", False):
            return
        try:
            processes = list(manager.transient_processes)
        except RuntimeError:  # the dict changed while we read it
            continue
        for process in processes:
            try:
                exitcode = process.exitcode
            except (AttributeError, AssertionError):
                continue
            if exitcode in (None, 0):
                continue
            now = time.monotonic()
            if now - restarted_at.get(process.name, -BACKOFF) < BACKOFF:
                continue
            restarted_at[process.name] = now
            log.error("edge worker %s exited with %s; restarting it", process.name, exitcode)
            manager.monitor_publisher.send(process.name)
