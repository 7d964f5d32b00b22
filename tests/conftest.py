"""Fixtures shared by every suite: real Redis, PostgreSQL, simnodes and portals."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from simnode.testing import SimnodeProcess, start_simnode
from tests.support.portal import PortalServer
from tests.support.services import postgres_database, redis_service

#: Fixtures shared by every suite, kept beside their helpers in tests/support/.
pytest_plugins = ["tests.support.hot", "tests.support.inprocess", "tests.support.standard"]


#: Modules that converge this machine with Ansible, and the one that checks rendered
#: Nginx sites with the Nginx the first installs. The two converges take turns on it
#: (one supervisord: ``MachineLock``), so they share one xdist worker (spread over
#: several, one worker would sit idle for minutes waiting for another's converge), and run in
#: this order: site.yml installs Nginx before test_templates.py needs it, and on a
#: fresh machine it makes /opt/inference-portal-test as its services need it.
MACHINE_MODULES = ("tests/ansible/test_site_local.py", "tests/ansible/test_monitoring_local.py",
                   "tests/ansible/test_templates.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The machine's modules together, in :data:`MACHINE_MODULES`' order (xdist or not)."""
    rank = {module: order for order, module in enumerate(MACHINE_MODULES)}
    machine = [item for item in items if item.nodeid.split("::")[0] in rank]
    if not machine:
        return
    first = items.index(machine[0])
    rest = [item for item in items if item.nodeid.split("::")[0] not in rank]
    machine.sort(key=lambda item: rank[item.nodeid.split("::")[0]])  # stable: each module's order
    items[:] = rest[:first] + machine + rest[first:]


#: Scopes handed out first, longest first (wall seconds on 3 workers, 2 cores: machine
#: 330, scaling 160, resilience 95, provision 75, cold start 70, dev 50, simulator 35).
#: xdist would hand out the scopes with the most tests first, so a long scope of few
#: tests came last and the other workers sat idle until it ended; short scopes last
#: let the workers finish together.
FIRST_SCOPES = ("machine", "tests/lifecycle/test_scaling.py", "tests/lifecycle/test_resilience.py",
                "tests/ansible/test_provision_moto.py", "tests/lifecycle/test_cold_start.py",
                "tests/cli/test_dev_quickstart.py", "tests/fleet/test_fleet_simulator.py")


@pytest.hookimpl(optionalhook=True)  # xdist's hook: absent when run with -p no:xdist
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``--dist loadscope`` with the machine-converging modules as one scope, and
    :data:`FIRST_SCOPES` handed out before the others."""
    if config.getvalue("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class MachineScope(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            if nodeid.startswith(MACHINE_MODULES):
                return "machine"
            return str(super()._split_scope(nodeid))

        def _assign_work_unit(self, node: Any) -> None:
            for scope in reversed(FIRST_SCOPES):
                if scope in self.workqueue:
                    self.workqueue.move_to_end(scope, last=False)
            super()._assign_work_unit(node)

    return MachineScope(config, log)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "portal_settings(**fields): Settings fields of the "
                            "in-process portal (tests/support/inprocess.py)")


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    with redis_service() as url:
        yield url


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for one test (skipped locally if none answers)."""
    with postgres_database() as url:
        yield url


@pytest.fixture(scope="module")
def module_postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for one test module."""
    with postgres_database() as url:
        yield url


@pytest.fixture
def simnode() -> Iterator[Callable[..., SimnodeProcess]]:
    """Start simnodes for one test: ``simnode("--model", "m1", ...)``; all stopped after."""
    started: list[SimnodeProcess] = []

    def start(*args: str) -> SimnodeProcess:
        node = start_simnode(*args)
        started.append(node)
        return node

    yield start
    for node in started:
        node.stop()


@pytest.fixture
def portal_factory(tmp_path: Path, redis_url: str) -> Iterator[Callable[..., PortalServer]]:
    """Make portals for one test; each is stopped after it."""
    made: list[PortalServer] = []

    def make(**options) -> PortalServer:
        server = PortalServer(tmp_path / f"portal{len(made)}", redis_url, **options)
        made.append(server)
        return server

    yield make
    for server in made:
        server.stop()
