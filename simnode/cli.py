"""Command line of a simnode: ``python -m simnode`` and ``portal simnode``."""

from __future__ import annotations

import argparse
import os
import sys
import time
from functools import partial

from sanic import Sanic
from sanic.worker.loader import AppLoader

from simnode.app import create_app
from simnode.config import KINDS, USAGE_MODES, SimConfig

__all__ = ["add_arguments", "config_from_args", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the simnode options to ``parser`` (the caller owns the parser and its help)."""
    parser.add_argument("--model", required=True, help="served model name")
    parser.add_argument(
        "--kind",
        choices=KINDS,
        default="generate",
        help="what the model does, like vLLM's runner: generate (chat, completions, "
        "responses, messages), embed (embeddings, score, rerank) or rerank (a "
        "cross-encoder: score, rerank); default %(default)s",
    )
    parser.add_argument(
        "--embedding-dim",
        type=int,
        default=384,
        help="embedding size of an embed model; `dimensions` may ask for fewer "
        "(default %(default)s)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s)")
    parser.add_argument("--port", type=int, required=True, help="port to bind")
    parser.add_argument(
        "--tokens-per-second",
        type=float,
        default=0.0,
        help="generation pace after the first token; 0 = as fast as possible (default)",
    )
    parser.add_argument(
        "--ttft", type=float, default=0.0, help="time to first token, in seconds (default 0)"
    )
    parser.add_argument(
        "--reply-tokens",
        type=int,
        default=16,
        help="natural reply length when max_tokens allows more (default %(default)s)",
    )
    parser.add_argument(
        "--max-model-len", type=int, default=8192, help="context window (default %(default)s)"
    )
    parser.add_argument(
        "--max-num-seqs",
        type=int,
        default=256,
        help="sequences generated at once; more wait (default %(default)s)",
    )
    parser.add_argument("--api-key", default=None,
                        help="require 'Bearer KEY' on /v1/* (default: $VLLM_API_KEY, as vLLM; "
                             "the environment keeps the key out of `ps`)")
    parser.add_argument(
        "--startup-delay",
        type=float,
        default=0.0,
        help="seconds to wait before binding the port, like a model loading",
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="worker processes (default %(default)s)"
    )
    parser.add_argument(
        "--keep-alive-timeout",
        type=float,
        default=5.0,
        help="idle keep-alive timeout in seconds; vLLM's uvicorn uses 5 (default %(default)s)",
    )
    parser.add_argument(
        "--usage",
        choices=USAGE_MODES,
        default="vllm",
        help="vllm: report usage as vLLM does (default); none: never, like llama.cpp's "
        "server (no per-chunk usage, no final usage chunk even when asked, no 'usage' in "
        "answers)",
    )
    parser.add_argument(
        "--no-tokenize",
        dest="tokenize",
        action="store_false",
        help="serve no /tokenize nor /detokenize (404), like servers without them",
    )
    cache = parser.add_argument_group("prefix cache (like vLLM's automatic prefix caching)")
    cache.add_argument(
        "--block-size",
        type=int,
        default=16,
        help="tokens per KV cache block, the unit a prompt prefix matches in "
        "(default %(default)s, as vLLM)",
    )
    cache.add_argument(
        "--prefix-cache-blocks",
        type=int,
        default=8192,
        metavar="N",
        help="blocks the prefix cache keeps, least recently used evicted first; "
        "0 = no prefix caching (default %(default)s)",
    )
    cache.add_argument(
        "--prefill-tokens-per-second",
        type=float,
        default=0.0,
        metavar="F",
        help="prefill pace of the prompt tokens not cached, added to the time to first "
        "token; 0 = prefill takes no time (default)",
    )
    faults = parser.add_argument_group("fault injection (changeable at runtime: /sim/faults)")
    faults.add_argument(
        "--fail-after",
        type=int,
        default=None,
        metavar="N",
        help="break streams after N content tokens; longer non-streaming replies answer 500",
    )
    faults.add_argument(
        "--fail-status",
        type=int,
        default=None,
        metavar="CODE",
        help="answer every completion request with this HTTP status",
    )
    faults.add_argument(
        "--fail-count",
        type=int,
        default=None,
        metavar="N",
        help="with --fail-status: fail only the next N completion requests",
    )
    faults.add_argument(
        "--hang", action="store_true", help="accept completion requests and never answer"
    )


def config_from_args(args: argparse.Namespace) -> SimConfig:
    """Build the :class:`SimConfig` the parsed options describe.

    Raises:
        ValueError: when an option is out of range.
    """
    return SimConfig(
        model=args.model,
        host=args.host,
        port=args.port,
        tokens_per_second=args.tokens_per_second,
        ttft=args.ttft,
        reply_tokens=args.reply_tokens,
        max_model_len=args.max_model_len,
        max_num_seqs=args.max_num_seqs,
        api_key=args.api_key or os.environ.get("VLLM_API_KEY") or None,
        startup_delay=args.startup_delay,
        workers=args.workers,
        keep_alive_timeout=args.keep_alive_timeout,
        fail_after=args.fail_after,
        fail_status=args.fail_status,
        fail_count=args.fail_count,
        hang=args.hang,
        usage=args.usage,
        tokenize=args.tokenize,
        kind=args.kind,
        embedding_dim=args.embedding_dim,
        block_size=args.block_size,
        prefix_cache_blocks=args.prefix_cache_blocks,
        prefill_tokens_per_second=args.prefill_tokens_per_second,
    )


def run(args: argparse.Namespace) -> int:
    """Serve until interrupted; return the process exit status."""
    try:
        config = config_from_args(args)
    except ValueError as exc:
        print(f"simnode: {exc}", file=sys.stderr)
        return 2
    if config.startup_delay > 0:
        time.sleep(config.startup_delay)
    loader = AppLoader(factory=partial(create_app, config))
    app = loader.load()
    app.prepare(
        host=config.host,
        port=config.port,
        workers=config.workers,
        single_process=config.workers == 1,
        access_log=False,
        motd=False,
    )
    print(
        f"simnode: serving {config.model!r} on http://{config.host}:{config.port} "
        f"({config.workers} worker{'s' if config.workers > 1 else ''})",
        file=sys.stderr,
        flush=True,
    )
    if config.workers == 1:
        Sanic.serve_single(app)
    else:
        Sanic.serve(primary=app, app_loader=loader)
    return 0
