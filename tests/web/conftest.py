"""The pages' fixtures: the chat's module portal (two workers, a simnode, signup credit),
and ``chromium``, a real browser (Debian's Chromium, driven by Playwright) per module."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

from tests.chat.conftest import room_portal  # noqa: F401
from tests.support.services import strict

#: Where Chromium is (Debian's package; `make test` installs it).
CHROMIUM = os.environ.get("PORTAL_TEST_CHROMIUM", "/usr/bin/chromium")


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    if not (os.path.exists(CHROMIUM) or shutil.which("chromium")):
        message = f"Chromium not found at {CHROMIUM} (make test installs it)"
        if strict():
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--disable-quic"])
        yield browser
        browser.close()
