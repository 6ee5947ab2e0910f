"""config: importing it has no side effect and reaches nothing of the lab, the activities, the starters or the
worker, so the ways in and the lab may import it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

_PROBE = """
import json, sys, threading
import config.settings, config.directory, config.inventory
ours = {"lab", "activities", "starter", "worker", "workflows"}
print(json.dumps({
    "project": sorted(m for m in sys.modules if m.split(".")[0] in ours),
    "threads": threading.active_count(),
}))
"""


def _probe(code: str) -> dict[str, object]:
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout)
    return result


def test_importing_config_starts_nothing_and_reaches_only_the_contract() -> None:
    seen = _probe(_PROBE)
    assert seen["threads"] == 1
    # The contract's enums and names (DelegationPolicy, DelegationMode, the task queue) are all it takes.
    assert seen["project"] == ["workflows", "workflows.contracts"]


def test_the_inventory_format_imports_nothing_else_of_snlm() -> None:
    # The lab imports config.inventory: it must not bring the engine's contract, or anything else, with it.
    seen = _probe(
        _PROBE.replace("import config.settings, config.directory, config.inventory", "import config.inventory")
    )
    assert seen["project"] == []
