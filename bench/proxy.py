"""Benchmark of the API hot path: added latency and throughput of one edge worker.

    python bench/proxy.py [--seconds 10] [--rate 200] [--concurrency 32]

Starts a simnode, a portal with ONE edge worker (billing, limits and auth on:
every request reserves and settles credit in Redis and is written to the SQL
ledger by the bookkeeper), then measures:

1. added latency: the same requests at a fixed rate (open loop) sent to the
   node directly and through the portal; p50/p99 of each and the difference;
   for streams, the time to the last byte and to the first token; and the same
   for embeddings (four passages a request, to an ``--kind embed`` simnode, at
   ``--embed-rate``);
2. throughput: closed loop at a fixed concurrency (``wrk`` when installed, else
   a Python client), requests per second, and the edge worker's CPU time per
   request (from /proc), i.e. what one worker sustains on a core of its own.

Figures go to stdout and, as JSON, to bench/results/proxy-<time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge.fleet.upstream import Upstream
from simnode.testing import start_simnode
from tests.support.portal import PortalServer
from tests.support.services import redis_service

CHAT = {"model": "bench", "messages": [{"role": "user", "content": "Hello there, how are you?"}],
        "max_tokens": 16}
STREAM = {**CHAT, "stream": True}
#: Four passages of about 40 tokens, as a retrieval pipeline embeds a page's chunks.
EMBED = {"model": "bench-embed",
         "input": [f"Passage {i}: GPU nodes serve one model each; the portal meters every "
                   "token it forwards and settles the node's own count." for i in range(4)]}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


async def open_loop(url: str, key: str, body: dict, rate: float, seconds: float,
                    stream: bool) -> dict[str, list[float]]:
    """Send at ``rate`` per second regardless of answers; latencies in milliseconds."""
    client = Upstream(connect_timeout=5, timeout=30, max_connections=512, api_key=key)
    payload = json.dumps(body).encode()
    total: list[float] = []
    first: list[float] = []
    errors = 0

    async def one() -> None:
        nonlocal errors
        start = time.perf_counter()
        response = await client.post(url, payload)
        if response.status_code != 200:
            errors += 1
            await response.aread()
            return
        seen_first = False
        async for chunk in response.aiter_raw():
            if stream and not seen_first and b'"content":"' in chunk.replace(
                    b'"content":""', b""):
                first.append((time.perf_counter() - start) * 1000)
                seen_first = True
        total.append((time.perf_counter() - start) * 1000)

    # warm the connection pool
    await asyncio.gather(*(one() for _ in range(20)))
    total.clear()
    first.clear()
    tasks = []
    interval = 1 / rate
    start = time.perf_counter()
    for i in range(int(rate * seconds)):
        delay = start + i * interval - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one()))
    await asyncio.gather(*tasks)
    await client.aclose()
    if errors:
        raise RuntimeError(f"{errors} requests failed")
    return {"total": total, "first": first}


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def closed_loop(url: str, key: str, body: dict, concurrency: int, seconds: float,
                worker_pid: int) -> dict[str, float]:
    """Requests per second at a fixed concurrency, and worker CPU per request."""
    before = cpu_seconds(worker_pid)
    if shutil.which("wrk"):
        script = Path(tempfile.mkstemp(suffix=".lua")[1])
        script.write_text(textwrap.dedent(f"""
            wrk.method = "POST"
            wrk.body = {json.dumps(json.dumps(body))}
            wrk.headers["Content-Type"] = "application/json"
            wrk.headers["Authorization"] = "Bearer {key}"
        """))
        out = subprocess.run(["wrk", "-t1", f"-c{concurrency}", f"-d{int(seconds)}s", "-s",
                              str(script), url], capture_output=True, text=True).stdout
        requests = int(next(line for line in out.splitlines() if "requests in" in line)
                       .split()[0])
        non_2xx = sum(int(line.split()[-1]) for line in out.splitlines()
                      if "Non-2xx" in line)
        elapsed = seconds
        tool = "wrk"
    else:
        requests, non_2xx, elapsed = asyncio.run(_python_closed_loop(url, key, body,
                                                                     concurrency, seconds))
        tool = "python"
    used = cpu_seconds(worker_pid) - before
    return {"tool": tool, "requests": requests, "errors": non_2xx,
            "rps": requests / elapsed, "worker_cpu_us_per_request": used / requests * 1e6}


async def _python_closed_loop(url: str, key: str, body: dict, concurrency: int,
                              seconds: float) -> tuple[int, int, float]:
    client = Upstream(connect_timeout=5, timeout=30, max_connections=concurrency, api_key=key)
    payload = json.dumps(body).encode()
    done = errors = 0
    deadline = time.perf_counter() + seconds

    async def loop() -> None:
        nonlocal done, errors
        while time.perf_counter() < deadline:
            response = await client.post(url, payload)
            await response.aread()
            done += 1
            errors += response.status_code != 200

    start = time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(concurrency)))
    return done, errors, time.perf_counter() - start


def summary(direct: list[float], proxied: list[float]) -> dict[str, float]:
    return {
        "direct_p50_ms": round(percentile(direct, 50), 3),
        "direct_p99_ms": round(percentile(direct, 99), 3),
        "portal_p50_ms": round(percentile(proxied, 50), 3),
        "portal_p99_ms": round(percentile(proxied, 99), 3),
        "added_p50_ms": round(percentile(proxied, 50) - percentile(direct, 50), 3),
        "added_p99_ms": round(percentile(proxied, 99) - percentile(direct, 99), 3),
        "added_mean_ms": round(statistics.mean(proxied) - statistics.mean(direct), 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rate", type=float, default=200, help="open-loop requests/s")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--embed-rate", type=float, default=50,
                        help="open-loop embeddings requests/s (simnode computes its vectors "
                             "in Python: one worker serves about a hundred a second)")
    parser.add_argument("--scoped", action="store_true",
                        help="call with an API-scope key of the account, limited to the "
                             "model and capped daily (the hot path's extra checks)")
    args = parser.parse_args()

    results: dict[str, object] = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version(),
                    "cpu": _cpu_model()},
        "settings": vars(args),
    }
    with redis_service() as redis_url, tempfile.TemporaryDirectory() as tmp, \
            start_simnode("--model", "bench", "--workers", "1") as node, \
            start_simnode("--model", "bench-embed", "--kind", "embed", "--workers", "1") \
            as embedder:
        portal = PortalServer(Path(tmp), redis_url, workers=1)
        portal.cli("migrate")
        portal.add_model("bench")
        portal.add_node("bench", node.url)
        portal.add_model("bench-embed", kind="embed", output_price="0")
        portal.add_node("bench-embed", embedder.url)
        _key_id, key = portal.create_key("1000000", rpm=100_000_000, tpm=2_000_000_000)
        if args.scoped:
            owner = portal.cli_json("keys", "list")[0]["account"]
            key = portal.cli_json("keys", "create", "--name", "scoped", "--account", str(owner),
                                  "--scope", "api", "--models", "bench,bench-embed",
                                  "--cap", "500000", "--cap-reset", "daily", "--rpm", "100000000",
                                  "--tpm", "2000000000")["key"]
        with portal:
            (worker,) = portal.worker_pids()
            direct_url = node.url + "/v1/chat/completions"
            portal_url = portal.url + "/v1/chat/completions"
            for name, body, stream in (("non_streaming", CHAT, False),
                                       ("streaming", STREAM, True)):
                direct = asyncio.run(open_loop(direct_url, key, body, args.rate,
                                               args.seconds, stream))
                proxied = asyncio.run(open_loop(portal_url, key, body, args.rate,
                                                args.seconds, stream))
                entry = summary(direct["total"], proxied["total"])
                if stream:
                    entry["ttft"] = summary(direct["first"], proxied["first"])
                results[f"latency_{name}_at_{int(args.rate)}rps"] = entry
            results["throughput_non_streaming"] = closed_loop(
                portal_url, key, CHAT, args.concurrency, args.seconds, worker)
            results["throughput_streaming"] = closed_loop(
                portal_url, key, STREAM, args.concurrency, args.seconds, worker)
            results["direct_node_throughput"] = closed_loop(
                direct_url, key, CHAT, args.concurrency, args.seconds, node.process.pid)
            direct_url = embedder.url + "/v1/embeddings"
            portal_url = portal.url + "/v1/embeddings"
            direct = asyncio.run(open_loop(direct_url, key, EMBED, args.embed_rate,
                                           args.seconds, False))
            proxied = asyncio.run(open_loop(portal_url, key, EMBED, args.embed_rate,
                                            args.seconds, False))
            results[f"latency_embeddings_at_{int(args.embed_rate)}rps"] = summary(
                direct["total"], proxied["total"])
            results["throughput_embeddings"] = closed_loop(
                portal_url, key, EMBED, args.concurrency, args.seconds, worker)
    print(json.dumps(results, indent=2))
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / f"proxy-{time.strftime('%Y%m%d-%H%M%S')}.json").write_text(json.dumps(results,
                                                                                  indent=2))
    return 0


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    sys.exit(main())
