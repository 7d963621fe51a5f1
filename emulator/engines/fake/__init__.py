"""The fake engine: vLLM's OpenAI HTTP surface, deterministic and fast, with fault knobs.

The emulator's runtime starts one process per deployment instance with ``instance_command``;
the deployment's environment variables (``FAKE_ENGINE_*``, ``VLLM_ARGS``) configure it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]


def instance_command(port: int, env: Mapping[str, str]) -> tuple[list[str], dict[str, str]]:
    """The argv for one instance on ``127.0.0.1:port`` and the environment it needs on top of ``env``."""
    python_path = str(REPO_ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    argv = [sys.executable, "-m", "emulator.engines.fake", "--host", "127.0.0.1", "--port", str(port)]
    return argv, {"PYTHONPATH": python_path, "PYTHONUNBUFFERED": "1"}
