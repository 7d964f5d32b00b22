"""Helpers for the Ansible suites: run real ansible-playbook, read its recap.

Every command gets a clean environment: the caller's PORTAL_* and AWS_* variables
never leak into a playbook (a supervisord started by a converge would pass them on
to the portal it runs), and the AWS SDK never looks for instance credentials.
"""

from __future__ import annotations

import dataclasses
import fcntl
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

#: Root of the repository (where ansible.cfg and site.yml are).
REPO = Path(__file__).resolve().parents[2]
#: Directory of the interpreter running the tests: ansible-playbook and portal are beside it.
BIN = Path(sys.executable).parent
#: A PLAY RECAP line: host, then its counters.
RECAP = re.compile(
    r"^(?P<host>\S+)\s*:\s*ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+"
    r"unreachable=(?P<unreachable>\d+)\s+failed=(?P<failed>\d+)", re.MULTILINE)


def strict() -> bool:
    """In CI (PORTAL_TEST_STRICT=1 or CI=true) a missing prerequisite fails instead of skipping."""
    return os.environ.get("PORTAL_TEST_STRICT") == "1" or os.environ.get("CI") == "true"


def tool(name: str) -> str:
    """Path of an executable installed beside the test interpreter (fails when missing)."""
    path = BIN / name
    if not path.exists():
        pytest.fail(f"{name} is not installed in {BIN}: pip install -e '.[test]' "
                    "(it brings ansible and ansible-lint)")
    return str(path)


def ansible_env(**extra: str) -> dict[str, str]:
    """A clean environment for ansible-* commands run from the repository."""
    env = {
        "PATH": f"{BIN}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": os.environ.get("HOME", "/root"),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
        "ANSIBLE_INVENTORY": str(REPO / "inventory" / "local.yml"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_DEPRECATION_WARNINGS": "0",
        "ANSIBLE_RETRY_FILES_ENABLED": "0",
        # Never ask the EC2 instance metadata service for credentials.
        "AWS_EC2_METADATA_DISABLED": "true",
        "PYTHONUNBUFFERED": "1",
    }
    env.update(extra)
    return env


@dataclasses.dataclass
class Run:
    """One finished ansible command."""

    args: list[str]
    returncode: int
    output: str

    def recap(self) -> dict[str, dict[str, int]]:
        """PLAY RECAP counters per host (summed over the plays of the run)."""
        hosts: dict[str, dict[str, int]] = {}
        for match in RECAP.finditer(self.output):
            counters = hosts.setdefault(match["host"], {})
            for key in ("ok", "changed", "unreachable", "failed"):
                counters[key] = counters.get(key, 0) + int(match[key])
        return hosts

    def changed(self) -> int:
        return sum(host["changed"] for host in self.recap().values())

    def changed_tasks(self) -> list[str]:
        """Names of the tasks that reported `changed` (for failure messages)."""
        names, current = [], ""
        for line in self.output.splitlines():
            if line.startswith(("TASK [", "RUNNING HANDLER [")):
                current = line.rstrip("* ")
            elif line.startswith("changed:") and current:
                names.append(current)
        return names

    def tail(self, lines: int = 80) -> str:
        return "\n".join(self.output.splitlines()[-lines:])

    def check(self) -> Run:
        """Fail the test with the end of the output unless the command succeeded."""
        if self.returncode != 0:
            pytest.fail(f"{' '.join(self.args[:3])}... exited {self.returncode}:\n{self.tail()}")
        recap = self.recap()
        if any(h["failed"] or h["unreachable"] for h in recap.values()):
            pytest.fail(f"failed or unreachable hosts {recap}:\n{self.tail()}")
        return self


def run_ansible(command: str, *args: str | Path, env: Mapping[str, str] | None = None,
                timeout: float = 600, log: Path | None = None) -> Run:
    """Run ansible-playbook (or another ansible command) from the repository root.

    Parameters:
      command: executable name beside the test interpreter, e.g. "ansible-playbook".
      env: the environment (default: :func:`ansible_env`).
      timeout: seconds before the command is killed.
      log: also write the whole output there (kept for debugging after the run).
    """
    argv = [tool(command), *map(str, args)]
    # Its own process group, so that a time-out ends Ansible's forks and modules too.
    proc = subprocess.Popen(argv, cwd=REPO, env=dict(env or ansible_env()),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        output += f"\n[test] killed after {timeout} seconds\n"
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(output)
    return Run(argv, proc.returncode, output)


def unwrap(value: object) -> object:
    """ansible-inventory --list marks untrusted strings {"__ansible_unsafe": "..."}; drop that."""
    if isinstance(value, dict):
        if set(value) == {"__ansible_unsafe"}:
            return value["__ansible_unsafe"]
        return {key: unwrap(item) for key, item in value.items()}
    if isinstance(value, list):
        return [unwrap(item) for item in value]
    return value


def which(name: str) -> str | None:
    return shutil.which(name, path="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")


def playbooks() -> Sequence[Path]:
    """Every playbook of the repository: site.yml and playbooks/*.yml."""
    return [REPO / "site.yml", *sorted((REPO / "playbooks").glob("*.yml"))]


#: Where the suites that converge THIS machine install (test_site_local.py,
#: test_monitoring_local.py); their variables put every directory under it.
TEST_ROOT = Path("/opt/inference-portal-test")


def prepare_test_root() -> Path:
    """Make :data:`TEST_ROOT` (root's, 0755) before a converge of this machine.

    Ansible's ``file`` module makes missing parents with the owner and mode of the
    directory it was asked for: a monitoring converge on a fresh machine made it
    ``root:prometheus 0750``, and the site converge that followed could not start its
    node (user ``vllm`` could not enter its home below it).
    """
    TEST_ROOT.mkdir(parents=True, exist_ok=True)
    os.chown(TEST_ROOT, 0, 0)
    TEST_ROOT.chmod(0o755)
    return TEST_ROOT


#: Taken by each suite that converges THIS machine (test_site_local.py,
#: test_monitoring_local.py): they share its supervisord, which each starts when it is
#: not running and stops afterwards, so they take turns, across test processes too.
MACHINE_LOCK = Path("/tmp/inference-portal-local-converge.lock")


class MachineLock:
    """The machine's converge lock, held from creation until :meth:`release`."""

    def __init__(self, path: Path = MACHINE_LOCK) -> None:
        self._handle = path.open("a")
        fcntl.flock(self._handle, fcntl.LOCK_EX)

    def release(self) -> None:
        if not self._handle.closed:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
