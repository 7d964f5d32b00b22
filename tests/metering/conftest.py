"""The in-process layer's fixtures under short names: ``portal`` and ``nodes``.

They are ``inprocess_portal`` and ``node_doubles`` of tests/support/inprocess.py (which
every suite may use); see that module for how a test scripts a node.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from tests.support.inprocess import InProcessPortal, NodeDouble

#: The model clients ask for, and the name its nodes serve it under.
MODEL = "m1"
SERVED = "sim-m1"


@pytest.fixture
def portal(inprocess_portal: InProcessPortal) -> InProcessPortal:
    return inprocess_portal


@pytest.fixture
def nodes(node_doubles: Callable[..., Awaitable[NodeDouble]]
          ) -> Callable[..., Awaitable[NodeDouble]]:
    """``await nodes(reply_tokens=4)``: a node double serving ``SERVED``."""
    async def start(model: str = SERVED, **options: Any) -> NodeDouble:
        return await node_doubles(model, **options)

    return start
