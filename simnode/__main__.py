"""``python -m simnode``: serve a simulated vLLM node."""

from __future__ import annotations

import argparse
import sys

from simnode.cli import add_arguments, run


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and serve."""
    parser = argparse.ArgumentParser(
        prog="python -m simnode",
        description="A simulated GPU node that speaks vLLM's OpenAI-compatible API.",
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
