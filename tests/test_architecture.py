"""The house rules a grep can check: one client factory knows the target; the emulator stands alone."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGET_TEST = re.compile(r"\btarget\s*[!=]=")


def sources(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (REPO / folder).rglob("*.py"))


def test_only_the_client_factory_compares_the_target():
    offenders = [f"{p.relative_to(REPO)}:{n}" for p in sources("tasks", "flows", "bench")
                 if p != REPO / "tasks" / "clients.py"
                 for n, line in enumerate(p.read_text().splitlines(), 1) if TARGET_TEST.search(line)]
    assert offenders == []


def imports(paths: list[Path], packages: tuple[str, ...]) -> list[str]:
    """``file: module`` for every import of one of ``packages`` in ``paths``."""
    found = []
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            found += [f"{path.relative_to(REPO)}: {n}" for n in names if n.split(".")[0] in packages]
    return found


def test_the_emulator_imports_nothing_of_the_product():
    assert imports(sources("emulator"), ("tasks", "flows")) == []


def test_only_the_client_factory_reaches_the_emulator():
    """It reads the emulator's connection file; no image, engine or registry code of the product knows the target."""
    offenders = imports([p for p in sources("tasks", "flows") if p != REPO / "tasks" / "clients.py"], ("emulator",))
    assert offenders == []


def test_flow_modules_stay_runbooks():
    """A flow module holds the order of steps; the bodies live in tasks/ (the rollout was 494 lines)."""
    assert len((REPO / "flows" / "rollout.py").read_text().splitlines()) <= 200
