"""The public names of simnode's modules are listed and real (ruff keeps them sorted)."""

from __future__ import annotations

import importlib

import pytest

MODULES = ["simnode", "simnode.tokenizer", "simnode.testing", "simnode.cli", "simnode.errors",
           "simnode.vectors", "simnode.pooling", "simnode.responses", "simnode.messages",
           "simnode.serving", "simnode.routes", "simnode.parsing",
           "simnode.prefix_cache"]


@pytest.mark.parametrize("name", MODULES)
def test_all_names_are_defined_once(name: str) -> None:
    module = importlib.import_module(name)
    exported = module.__all__
    assert len(set(exported)) == len(exported)
    assert all(hasattr(module, member) for member in exported)


def test_cli_wires_into_another_parser() -> None:
    import argparse

    from simnode.cli import add_arguments, config_from_args

    parser = argparse.ArgumentParser(prog="portal")
    commands = parser.add_subparsers(dest="command")
    add_arguments(commands.add_parser("simnode"))
    args = parser.parse_args(["simnode", "--model", "m", "--port", "9", "--fail-after", "4"])
    config = config_from_args(args)
    assert (config.model, config.port, config.fail_after, config.workers) == ("m", 9, 4, 1)
    assert (config.reply_tokens, config.max_model_len, config.max_num_seqs) == (16, 8192, 256)
