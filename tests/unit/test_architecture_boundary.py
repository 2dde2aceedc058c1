"""The architecture's import rules are a test: docs/architecture.md's table says which package may
import which, and every module of the package is checked against it (function-level imports too)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "architecture.md"
PACKAGE = REPO / "daemon"


def rules() -> dict[str, tuple[set[str], set[str] | None]]:
    """package -> (project packages it may import, other top-level modules it may import or None=any)."""
    out: dict[str, tuple[set[str], set[str] | None]] = {}
    for line in DOC.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 4 or not cells[0].startswith("`daemon"):
            continue
        package = cells[0].strip("`")
        project = set(cells[2].strip("`").split())
        other = None if cells[3] == "any" else set(cells[3].strip("`").split())
        out[package] = (project, other)
    return out


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            if node.module == "daemon.core":  # "from daemon.core import catalogue"
                found.update(f"daemon.core.{a.name}" for a in node.names)
    return found


def row_for(module: str, table: dict[str, tuple[set[str], set[str] | None]]) -> str | None:
    matches = [p for p in table if module == p or module.startswith(p + ".")]
    return max(matches, key=len) if matches else None


def allowed(target: str, permitted: set[str]) -> bool:
    return any(target == p or target.startswith(p + ".") for p in permitted)


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def test_the_table_covers_every_package() -> None:
    table = rules()
    assert {"daemon.core", "daemon.adapters", "daemon.cli", "daemon.reconciler"} <= set(table)
    entry_points = {"daemon", "daemon.__main__"}
    orphans = [
        m for m in map(module_name, MODULES) if m not in entry_points and not row_for(m, table)
    ]
    assert not orphans, f"modules without a row in {DOC.name}: {orphans}"


def violations(module: str, path: Path) -> list[str]:
    """What ``path`` (the source of ``module``) imports that its row does not allow."""
    table = rules()
    if module in {"daemon", "daemon.__main__"}:
        return sorted(i for i in imports(path) if i.startswith("daemon") and i != "daemon.cli")
    row = row_for(module, table)
    assert row is not None, f"{module} has no row in {DOC.name}"
    project, other = table[row]
    wrong = []
    for target in sorted(imports(path)):
        if target == "daemon" or target.startswith("daemon."):
            if not allowed(target, project):
                wrong.append(target)
        elif other is not None and target.split(".")[0] not in other:
            wrong.append(target)
    return wrong


@pytest.mark.parametrize("path", MODULES, ids=module_name)
def test_each_module_imports_only_what_its_row_allows(path: Path) -> None:
    module = module_name(path)
    assert not violations(module, path), f"{module} imports what {DOC.name} does not allow"


def test_the_check_fails_for_a_core_module_that_imports_an_adapter_or_io(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import os\nimport requests\nfrom daemon.adapters.xinference import launch_body\n"
    )
    assert violations("daemon.core.bad", bad) == ["daemon.adapters.xinference", "os", "requests"]
    assert violations("daemon.reconciler", bad) == ["daemon.adapters.xinference"]
