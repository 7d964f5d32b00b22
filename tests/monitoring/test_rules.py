"""monitoring/rules: promtool checks them and runs their unit tests (monitoring/tests);
every alert is tested, documented and built only on series the portal or vLLM exports."""

from __future__ import annotations

import re
import subprocess
from typing import Any

import yaml

from tests.monitoring.conftest import REPO, RULE_FILES, RULE_TESTS
from tests.monitoring.series import promql_series

#: The severities Alertmanager's routes (roles/monitoring) know.
SEVERITIES = {"critical", "warning", "info"}


def rules() -> list[dict[str, Any]]:
    return [rule for path in RULE_FILES for group in yaml.safe_load(path.read_text())["groups"]
            for rule in group["rules"]]


def alerts() -> list[dict[str, Any]]:
    return [rule for rule in rules() if "alert" in rule]


def test_rule_files_exist() -> None:
    assert RULE_FILES and RULE_TESTS
    assert len(alerts()) >= 15


def test_promtool_checks_the_rules(promtool: str) -> None:
    run = subprocess.run([promtool, "check", "rules", *map(str, RULE_FILES)],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "SUCCESS" in run.stdout + run.stderr


def test_promtool_unit_tests_pass(promtool: str) -> None:
    run = subprocess.run([promtool, "test", "rules", *map(str, RULE_TESTS)], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    assert output.count("SUCCESS") == len(RULE_TESTS), output


def test_every_alert_fires_in_a_unit_test() -> None:
    """Each alert has a case where it fires (and so its annotations are rendered)."""
    firing = set()
    for path in RULE_TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                if check.get("exp_alerts"):
                    firing.add(check["alertname"])
    missing = {rule["alert"] for rule in alerts()} - firing
    assert not missing, f"alerts never shown firing in monitoring/tests: {sorted(missing)}"


def test_every_alert_is_labelled_and_points_to_a_runbook() -> None:
    monitoring_doc = (REPO / "docs" / "monitoring.md").read_text()
    anchors = {re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
               for line in monitoring_doc.splitlines() if line.startswith("#")}
    for rule in alerts():
        name = rule["alert"]
        assert rule["labels"]["severity"] in SEVERITIES, name
        annotations = rule["annotations"]
        assert {"summary", "description", "runbook"} <= set(annotations), name
        page, _, anchor = annotations["runbook"].partition("#")
        assert (REPO / page).is_file(), f"{name}: {page} does not exist"
        if anchor:
            assert page == "docs/monitoring.md" and anchor in anchors, (name, anchor)
        # docs/monitoring.md has a section on every alert.
        assert f"`{name}`" in monitoring_doc, f"docs/monitoring.md does not explain {name}"


def test_rules_read_only_exported_series(exported_series: frozenset[str]) -> None:
    recorded = {rule["record"] for rule in rules() if "record" in rule}
    for rule in rules():
        unknown = promql_series(rule["expr"]) - exported_series - recorded
        assert not unknown, f"{rule.get('alert') or rule.get('record')} reads {unknown}"
