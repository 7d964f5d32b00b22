"""Fixtures of the monitoring suites: promtool, and the series the portal and vLLM export."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.ansible.conftest import strict
from tests.monitoring.series import PROMETHEUS_SERIES, portal_series, vllm_series

#: Root of the repository, and what it ships for monitoring.
REPO = Path(__file__).resolve().parents[2]
MONITORING = REPO / "monitoring"
RULE_FILES = sorted((MONITORING / "rules").glob("*.yml"))
RULE_TESTS = sorted((MONITORING / "tests").glob("*.yml"))
DASHBOARD = MONITORING / "grafana" / "portal.json"

_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@pytest.fixture(scope="session")
def promtool() -> str:
    """promtool (Debian's `prometheus` package), installed by ``make test`` through
    scripts/ensure-system-packages; this installs it too when it is missing. Skipped
    (failed in CI) only when it cannot be installed."""
    found = shutil.which("promtool", path=_PATH)
    if found is None:
        install = subprocess.run([str(REPO / "scripts" / "ensure-system-packages"),
                                  "monitoring"], capture_output=True, text=True, timeout=600)
        found = shutil.which("promtool", path=_PATH)
        if found is None:
            reason = ("promtool is not installed and could not be: "
                      f"{(install.stderr or install.stdout).strip()[-300:]} "
                      "(apt-get install prometheus)")
            if strict():
                pytest.fail(reason)
            pytest.skip(reason)
    return found


@pytest.fixture(scope="session")
def exported_series() -> frozenset[str]:
    """Every series name the portal or vLLM exports, and Prometheus's own ``up``."""
    return frozenset(portal_series() | vllm_series() | PROMETHEUS_SERIES)
