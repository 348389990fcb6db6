"""The folders import in one direction only (DESIGN.md section 7, README's folder table):
schemas <- persistence <- sync <- web."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAY_IMPORT = {
    "schemas": {"schemas"},
    "persistence": {"schemas", "persistence"},
    "sync": {"schemas", "persistence", "sync"},
    "web": {"schemas", "persistence", "sync", "web"},
}


def _our_imports(path: Path) -> set[str]:
    """The top folders of ours a module imports (`blackboard.<folder>...`)."""
    folders = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for name in names:
            parts = name.split(".")
            assert parts[0] not in MAY_IMPORT, f"{path}: `{name}` is not under blackboard."
            if parts[0] == "blackboard" and len(parts) > 1:
                folders.add(parts[1])
    return folders


def test_each_folder_imports_only_what_it_may() -> None:
    wrong = []
    for folder, allowed in MAY_IMPORT.items():
        for path in (ROOT / folder).rglob("*.py"):
            if "node_modules" in path.parts:
                continue
            for imported in _our_imports(path) - allowed:
                wrong.append(f"{path.relative_to(ROOT)} imports {imported}")
    assert wrong == []
