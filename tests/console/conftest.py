"""The console's fixtures: a real deployment with an admin token, and a Chromium page
signed in to its console.

``console_deployment`` (per module): ``portal serve`` with two workers, model ``m1`` on a
simnode, and a ``portal worker`` process, so node actions reach their actors.
``console_page`` (per test): a fresh browser context signed in through the sign-in form.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.deployment import Deployment, deploy
from tests.web.conftest import chromium  # noqa: F401  (a fixture of this package too)

#: The admin token of :func:`console_deployment`.
ADMIN_TOKEN = "console-browser-admin-token"
ADMIN = {"authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture(scope="module")
def console_deployment(tmp_path_factory: pytest.TempPathFactory, redis_url: str
                       ) -> Iterator[Deployment]:
    with deploy(tmp_path_factory.mktemp("console"), redis_url, model="m1", served="sim-m1",
                env={"PORTAL_ADMIN_TOKEN": ADMIN_TOKEN}) as made:
        made.portal.start_worker()
        yield made


def sign_in(page: Any, url: str, token: str = ADMIN_TOKEN) -> None:
    """Sign in through the form, as the operator does."""
    page.goto(url + "/admin/console")
    page.fill("input[name=token]", token)
    page.click("button[type=submit]")
    page.wait_for_url(url + "/admin/console")


@pytest.fixture
def console_page(chromium: Any, console_deployment: Deployment  # noqa: F811
                 ) -> Iterator[Any]:
    """A Chromium page signed in to the console (a context of its own: its own cookies)."""
    context = chromium.new_context()
    page = context.new_page()
    page.set_default_timeout(15_000)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    sign_in(page, console_deployment.url)
    yield page
    context.close()
    assert not errors, f"the console's scripts failed: {errors}"


def artifacts(name: str) -> Path:
    """Where a test leaves a screenshot for a person to look at."""
    from tests.web.test_key_management import ARTIFACTS

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS / name
