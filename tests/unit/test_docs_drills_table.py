"""docs/operations.md's "What the bot does when..." table names exactly the drills that exist,
and each row's "what you see" column is exactly what its drill asserts in the log.

The table is the operator's view of the drills; this keeps it from promising a scenario no
drill rehearses, leaving a drill out, or claiming log lines the drill does not check (each
drill passes its ``expect_events`` to the shared audit, which fails when one is missing).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from drills.audit import parse_expectation

ROOT = Path(__file__).resolve().parents[2]
DRILLS = ROOT / "tests" / "drills" / "test_drills_faults.py"


def _key(name: str) -> str:
    """``"crash x"`` / ``"sqlite_locked_"`` / ``"sqlite_locked_30s"`` -> ``crash`` / ``sqlite_locked``."""
    m = re.match(r"[a-z0-9_]+", name)
    assert m, name
    return m.group(0).split("_30s")[0].removesuffix("_")


def _drills() -> dict[str, set[str]]:
    """Drill name -> its ``expect_events``, read from every ``_finish(...)`` call."""
    tree = ast.parse(DRILLS.read_text())
    consts = {t.id: n.value for n in tree.body if isinstance(n, ast.Assign)
              for t in n.targets if isinstance(t, ast.Name)}
    out: dict[str, set[str]] = {}
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "_finish"):
            continue
        arg = node.args[1]
        if isinstance(arg, ast.Constant):
            name = str(arg.value)
        else:
            assert isinstance(arg, ast.JoinedStr) and isinstance(arg.values[0], ast.Constant), ast.dump(arg)
            name = str(arg.values[0].value)
        kw = {k.arg: k.value for k in node.keywords}
        assert "expect_events" in kw, f"drill {name!r}: _finish without expect_events"
        events: set[str] = set()
        value = kw["expect_events"]
        items = value.elts if isinstance(value, ast.Tuple) else [value]
        for item in items:
            if isinstance(item, ast.Starred):  # a shared tuple, e.g. *STORE_PAUSE_EVENTS
                assert isinstance(item.value, ast.Name), ast.dump(item)
                events |= set(ast.literal_eval(consts[item.value.id]))
            else:
                events.add(ast.literal_eval(item))
        out[_key(name)] = events
    return out


def _table() -> dict[str, set[str]]:
    """Drill name -> the backticked items of its row's "what you see" column."""
    doc = (ROOT / "docs" / "operations.md").read_text()
    section = doc.split("## What the bot does when...", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| when")]
    out: dict[str, set[str]] = {}
    for row in rows:
        cells = [c.strip() for c in row.strip().strip("|").split("|")]
        assert len(cells) == 4, f"a row of the table has {len(cells)} cells, not 4: {row}"
        out[_key(cells[3].strip("`"))] = set(re.findall(r"`([^`]+)`", cells[2]))
    return out


def test_every_drill_has_a_row_and_every_row_a_drill() -> None:
    drills, table = set(_drills()), set(_table())
    assert drills, "no drills found"
    assert drills == table, f"drills without a row: {sorted(drills - table)}; rows without a drill: {sorted(table - drills)}"


def test_each_row_claims_exactly_the_log_lines_its_drill_asserts() -> None:
    drills, table = _drills(), _table()
    for name, claimed in table.items():
        asserted = drills.get(name, set())
        assert claimed == asserted, (
            f"row {name!r}: the docs claim {sorted(claimed - asserted)} that the drill does not assert, "
            f"and the drill asserts {sorted(asserted - claimed)} that the docs do not show")
        for spec in claimed:
            parse_expectation(spec)  # well formed: event [field=value | field~text]...
