"""The wheel installs every folder under one namespace, `blackboard.*`, and nothing else at
the top level: an agent installing the client gets no generic `sync` or `web` package."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("persistence", "schemas", "sync", "web")


def _listed_packages() -> list[str]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]


def test_every_package_folder_is_listed_under_blackboard() -> None:
    found = sorted(
        "blackboard." + ".".join(init.parent.relative_to(ROOT).parts)
        for folder in FOLDERS
        for init in (ROOT / folder).rglob("__init__.py")
        if "node_modules" not in init.parts
    )
    assert found == sorted(_listed_packages())


def test_wheel_installs_only_the_blackboard_namespace(tmp_path: Path) -> None:
    source = tmp_path / "source"  # a copy: building writes build/ next to pyproject.toml
    skip = shutil.ignore_patterns("node_modules", "__pycache__")
    for folder in FOLDERS:
        shutil.copytree(ROOT / folder, source / folder, ignore=skip)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(wheels), "."],
        cwd=source,
        check=True,
        timeout=300,
    )
    (wheel,) = wheels.glob("blackboard-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert tops == {"blackboard"}
    assert "blackboard/sync/client/client.py" in names
    assert any(n.startswith("blackboard/schemas/migrations/postgres/") for n in names)
    assert any(n.startswith("blackboard/schemas/migrations/sqlite/") for n in names)
