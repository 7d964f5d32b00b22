"""``bench/fleet.py --short`` still runs: one row per policy, each with its idle share of
node-hours as a percentage, and the books of the simulation adding up. The figures
themselves are the benchmark's (``bench/README.md``)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
POLICIES = ("always-on at peak", "idle TTL, one node", "autoscaler", "autoscaler, least-loaded")


@pytest.mark.slow
def test_the_short_day_prints_a_row_per_policy(tmp_path: Path) -> None:
    out = tmp_path / "rows.json"
    run = subprocess.run([sys.executable, "bench/fleet.py", "--short", "--json", str(out)],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    lines = [line for line in run.stdout.splitlines() if line.strip()]
    assert [line[:28].strip() for line in lines] == list(POLICIES)
    for line in lines:
        assert re.search(r"idle +\d+(\.\d+)?% of", line), line
    rows = {row["policy"]: row for row in json.loads(out.read_text())}
    for row in rows.values():
        # Every call is served or refused; none is lost to a node stopped under it.
        assert row["served"] + row["refused"] == row["calls"], row
        assert row["lost"] == 0, row
        # Idle (up, no call) and booting are apart, and each model's hours add up.
        assert 0 <= row["idle_share_pct"] + row["boot_share_pct"] <= 100
        assert 0 <= row["alone_idle_share_pct"] <= row["idle_share_pct"]
        billed = row["node_hours_on_demand"] + row["node_hours_spot"]
        assert abs(sum(m["node_hours"] for m in row["models"].values()) - billed) < 0.2
        assert row["chat_prefix_token_hit_pct"] > 0
    always, scaled = rows["always-on at peak"], rows["autoscaler"]
    assert always["node_hours_spot"] == 0 and always["cold_starts"] == 0
    # Scaling with the load bills fewer node-hours than holding the peak all day.
    assert scaled["node_hours_on_demand"] + scaled["node_hours_spot"] < \
        always["node_hours_on_demand"]
    # Affinity finds conversations in the cache more often than least-loaded routing.
    assert scaled["chat_prefix_hit_pct"] > rows["autoscaler, least-loaded"][
        "chat_prefix_hit_pct"]
