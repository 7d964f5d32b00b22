"""``portal simnode``: a simulated vLLM node (see ``simnode/``)."""

from __future__ import annotations

import argparse

__all__ = ["register"]


def register(commands: argparse._SubParsersAction) -> None:
    from simnode import cli

    parser = commands.add_parser("simnode", help="run a simulated GPU node (vLLM's API)")
    cli.add_arguments(parser)
    parser.set_defaults(func=cli.run)
