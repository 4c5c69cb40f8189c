"""docs/operations.md's "What the bot does when..." table names exactly the drills that exist.

The table is the operator's view of the drills; this keeps it from promising a scenario no
drill rehearses, or leaving a drill out.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _drill_names() -> set[str]:
    src = (ROOT / "tests" / "drills" / "test_drills_faults.py").read_text()
    names = set()
    for m in re.finditer(r'_finish\(d, f?"([a-z0-9_]+)', src):
        names.add(m.group(1))
    return {n.removesuffix("_") for n in names}


def _table_names() -> set[str]:
    doc = (ROOT / "docs" / "operations.md").read_text()
    section = doc.split("## What the bot does when...", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| when")]
    names = set()
    for row in rows:
        last = row.rstrip(" |").rsplit("|", 1)[1].strip()
        names.add(last.strip("`").split("_30s")[0].removesuffix("_"))
    return names


def test_every_drill_has_a_row_and_every_row_a_drill() -> None:
    drills = {n.split("_{")[0] for n in _drill_names()}
    table = _table_names()
    assert drills, "no drills found"
    assert drills == table, f"drills without a row: {sorted(drills - table)}; rows without a drill: {sorted(table - drills)}"
