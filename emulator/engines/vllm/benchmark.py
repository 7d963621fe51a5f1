"""Drive vLLM's own serve benchmark from the orchestrator's venv, as an independent yardstick.

It runs ``bench_serve.py`` with the engine's python. Two flags are always set so that its numbers
are about the server and not about a mix-up: ``--model`` is the *served* name, because the
benchmark sends that value to ``/tokenize`` and silently skips prompt alignment when the server
answers 404 (it would, with a model path); and ``--tokenizer`` is the generated model's directory,
so the client counts tokens with the server's own tokenizer, offline.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

from emulator.engines.vllm import IMAGE_ENV, ready_layout
from emulator.engines.vllm.layout import PACKAGE_DIR

BENCH_SCRIPT = PACKAGE_DIR / "bench_serve.py"


def run_serve_benchmark(
    base_url: str,
    served_model_name: str,
    result_file: Path,
    args: Sequence[str] = (),
    env: dict[str, str] | None = None,
) -> Path:
    """Benchmark ``base_url`` with ``vllm bench serve`` ``args``; return the saved result JSON.

    ``args`` are the benchmark's own flags (``--endpoint``, ``--dataset-name``, ``--num-prompts``,
    ``--max-concurrency``, ``--request-rate``...). ``env`` adds variables to the benchmark's
    (offline) environment: ``SSL_CERT_FILE`` for the gateway's HTTPS, and ``OPENAI_API_KEY`` for
    its auth, which the benchmark sends as ``Authorization: Bearer`` (a key kept out of argv and of
    the result file, unlike ``--header``). Its ``/tokenize`` call sends no auth, so through the
    gateway prompt alignment is skipped (it prints a warning). Raises ``EngineNotBuilt`` without
    the engine, ``CalledProcessError`` if the run fails.
    """
    layout = ready_layout()
    result_file = result_file.resolve()
    argv = [
        str(layout.python), str(BENCH_SCRIPT),
        "--base-url", base_url,
        "--model", served_model_name,
        "--served-model-name", served_model_name,
        "--tokenizer", str(layout.model),
        "--save-result",
        "--result-dir", str(result_file.parent),
        "--result-filename", result_file.name,
        *args,
    ]
    subprocess.run(argv, check=True, env={**os.environ, **IMAGE_ENV, **(env or {})})
    return result_file
