"""Benchmark of cold starts and of queued jobs.

    python bench/coldstart.py [--runs 3] [--jobs 200] [--boot-delay 3]

Starts moto's EC2 server, Redis, a portal, a Dramatiq worker, and one EC2 node
that is stopped. Its "vLLM" is a simnode started when moto reports the instance
running, which then loads for ``--boot-delay`` seconds (a real GPU node takes
minutes; here only the portal's part matters).

1. Cold start, ``--runs`` times: submit a job while the node is stopped and time
   until its answer is ready. A poller hitting the node's ``/health`` every 5 ms
   records when the node itself could first serve; the portal's share of the cold
   start is answer time minus that moment (what the portal adds on top of the
   node's own boot). Goal: under 2 seconds.
2. Throughput: with the node up, submit ``--jobs`` jobs at once and time until
   all are answered: jobs per second the workers complete.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from simnode.testing import SimnodeProcess, free_port, start_simnode
from tests.support.moto import moto_server
from tests.support.portal import PortalServer
from tests.support.services import redis_service

MODEL = "cold"
BODY = {"model": MODEL, "messages": [{"role": "user", "content": "Are you awake?"}],
        "max_tokens": 16}


class NodeHost:
    """The stand-in for the instance: starts vLLM (a simnode) when EC2 says running."""

    def __init__(self, moto, instance_id: str, port: int, boot_delay: float) -> None:
        self.moto, self.instance_id, self.port = moto, instance_id, port
        self.boot_delay = boot_delay
        self.node: SimnodeProcess | None = None
        self.healthy_at: float | None = None

    def watch(self) -> None:
        def run() -> None:
            while self.moto.state(self.instance_id) != "running":
                time.sleep(0.05)
            self.node = start_simnode("--model", MODEL, "--startup-delay",
                                      str(self.boot_delay), port=self.port, wait=False)
            while True:
                try:
                    if httpx.get(f"http://127.0.0.1:{self.port}/health",
                                 timeout=0.2).status_code == 200:
                        self.healthy_at = time.perf_counter()
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.005)

        self.healthy_at = None
        threading.Thread(target=run, daemon=True).start()

    def stop(self) -> None:
        if self.node is not None:
            self.node.stop()
            self.node = None


CLIENT = httpx.Client(timeout=40)


def wait_job(url: str, headers: dict, job_id: str) -> dict:
    while True:
        job = CLIENT.get(f"{url}/v1/jobs/{job_id}?wait=30", headers=headers).json()
        if job["status"] not in ("queued", "running"):
            return job


def _seconds(start: str, end: str) -> float:
    from datetime import datetime

    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def portal_sql(portal: PortalServer, query: str) -> list[tuple]:
    from tests.support.services import sql_query

    return sql_query(f"sqlite://{portal.root / 'data' / 'portal.sqlite3'}", query)


async def submit_all(url: str, headers: dict, count: int) -> list[str]:
    """Submit ``count`` jobs at once (64 in flight), as many clients would."""
    limit = asyncio.Semaphore(64)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as client:
        async def one() -> str:
            async with limit:
                return (await client.post("/v1/jobs", json=BODY)).json()["id"]
        return list(await asyncio.gather(*(one() for _ in range(count))))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--boot-delay", type=float, default=3.0)
    parser.add_argument("--worker-processes", type=int, default=1)
    parser.add_argument("--worker-threads", type=int, default=16)
    args = parser.parse_args()

    results: dict[str, object] = {"machine": {"cpus": os.cpu_count(),
                                              "platform": platform.platform(),
                                              "python": platform.python_version()},
                                  "settings": vars(args)}
    with redis_service() as redis_url, moto_server() as moto, \
            tempfile.TemporaryDirectory() as tmp:
        portal = PortalServer(Path(tmp), redis_url, workers=1, env={
            **moto.env, "PORTAL_AWS_REGIONS": "us-east-1", "PORTAL_BOOT_TIMEOUT": "120"})
        portal.cli("migrate")
        portal.add_model(MODEL)
        instance = moto.run_node(MODEL, stopped=True)
        port = free_port()
        node_id = portal.cli_json("nodes", "add", "--model", MODEL, "--url",
                                  f"http://127.0.0.1:{port}", "--instance-id", instance,
                                  "--instance-type", "g5.xlarge")["id"]
        _key, key = portal.create_key("1000", rpm=1_000_000)
        headers = {"authorization": f"Bearer {key}"}
        host = NodeHost(moto, instance, port, args.boot_delay)
        with portal:
            portal.start_worker(processes=args.worker_processes, threads=args.worker_threads)
            shares, totals = [], []
            for _run in range(args.runs):
                host.watch()
                submitted = time.perf_counter()
                job = httpx.post(portal.url + "/v1/jobs", json=BODY, headers=headers).json()
                done = wait_job(portal.url, headers, job["id"])
                answered = time.perf_counter()
                assert done["status"] == "succeeded", done
                totals.append(answered - submitted)
                shares.append(answered - host.healthy_at)
                portal.cli("nodes", "stop", str(node_id), "--wait", "30")
                host.stop()
            results["cold_start"] = {
                "node_boot_seconds": args.boot_delay,
                "submit_to_answer_seconds": [round(t, 3) for t in totals],
                "portal_share_seconds": [round(s, 3) for s in shares],
                "portal_share_median_seconds": round(statistics.median(shares), 3),
                "portal_share_max_seconds": round(max(shares), 3),
            }
            host.watch()
            portal.cli("nodes", "boot", str(node_id), "--wait", "60")
            started = time.perf_counter()
            ids = asyncio.run(submit_all(portal.url, headers, args.jobs))
            submitted_in = time.perf_counter() - started
            statuses = [wait_job(portal.url, headers, job_id)["status"] for job_id in ids]
            elapsed = time.perf_counter() - started
            host.stop()
            rows = portal_sql(portal, "SELECT created_at, started_at, finished_at FROM jobs "
                              "ORDER BY created_at")[args.runs:]
            waits = sorted(_seconds(r[0], r[1]) for r in rows)
            runs = sorted(_seconds(r[1], r[2]) for r in rows)
            results["throughput"] = {
                "jobs": args.jobs, "succeeded": statuses.count("succeeded"),
                "submit_seconds": round(submitted_in, 3),
                "all_answered_seconds": round(elapsed, 3),
                "jobs_per_second": round(args.jobs / elapsed, 1),
                "queue_wait_p50_seconds": round(waits[len(waits) // 2], 3),
                "run_p50_seconds": round(runs[len(runs) // 2], 3),
                "run_p99_seconds": round(runs[int(len(runs) * 0.99)], 3),
            }
    print(json.dumps(results, indent=2))
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / f"coldstart-{time.strftime('%Y%m%d-%H%M%S')}.json").write_text(
        json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
