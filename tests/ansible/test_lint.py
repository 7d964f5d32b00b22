"""The Ansible content is lint-clean (production profile) and every playbook parses."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.ansible.conftest import REPO, ansible_env, playbooks, run_ansible

pytestmark = pytest.mark.timeout(300)


def test_ansible_lint_production_profile() -> None:
    run = run_ansible("ansible-lint", "-c", "ansible/ansible-lint.yml", "--nocolor",
                      env=ansible_env())
    assert run.returncode == 0, run.tail()
    assert "Profile 'production' was required, and it passed" in run.output, run.tail()
    # The whole tree was looked at, not a handful of files.
    files = int(run.output.split(" files processed")[0].rsplit(" ", 1)[-1])
    assert files >= 60, run.tail()


@pytest.mark.parametrize("playbook", playbooks(), ids=lambda p: str(p.relative_to(REPO)))
def test_syntax_check(playbook: Path) -> None:
    run = run_ansible("ansible-playbook", "--syntax-check", playbook)
    assert run.returncode == 0, run.tail()


def test_every_role_documents_every_default() -> None:
    """Each role has a README whose variable table names each of its defaults."""
    for role in sorted((REPO / "roles").iterdir()):
        readme = role / "README.md"
        assert readme.is_file(), f"{role.name} has no README.md"
        text = readme.read_text()
        defaults = (role / "defaults" / "main.yml").read_text().splitlines()
        names = [line.split(":", 1)[0] for line in defaults
                 if line and not line.startswith(("#", " ", "-")) and ":" in line]
        missing = [name for name in names if f"`{name}`" not in text]
        assert not missing, f"roles/{role.name}/README.md does not document {missing}"
