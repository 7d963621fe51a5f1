"""Shared pieces of the rollout tests: fast settings for the fake engine, running the flow, reading its record."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]

# The emulator's stand-in for vLLM's OpenAI server image: docker/ built FROM it runs on the fake engine.
FAKE_BASE = "r1emulator/fake-vllm-openai@sha256:23078e0b29a648ff54da3b78fc10b23cf829192db3ed7a275e055d0261499dac"

# A rollout on the fake engine in seconds: tiny probes and bakes, few samples per verdict; the image is
# built from docker/ (rendered FROM the fake base) by the first rollout on an emulator and reused after.
FAST = {
    "R1_BASE_IMAGE": FAKE_BASE,
    "R1_BAKE_SECONDS": "1.5",
    "R1_LOAD_GATE__BAKE_RATE": "40",
    "R1_LOAD_GATE__REQUESTS": "12",
    "R1_SLO__MIN_REQUESTS": "5",
    "R1_PROBES__READINESS__INITIAL_DELAY": "1",
    "R1_PROBES__READINESS__PERIOD": "1",
    "R1_PROBES__READINESS__FAILURE_THRESHOLD": "10",
    "R1_WORKLOAD__MODEL_LOAD_SECONDS": "5",
    "R1_TRAFFIC_STEPS": "[25, 100]",  # 25 %: enough live samples on the new colour in a short bake
    "R1_AUTH_MODE": "key",
}


def fast_env(state_dir: Path, reports_dir: Path, endpoint: str, **extra: str) -> dict[str, str]:
    """The R1_* variables for one rollout on the emulator at ``state_dir``."""
    env = {**FAST, "R1_EMULATOR_STATE_DIR": str(state_dir), "R1_REPORTS_DIR": str(reports_dir),
           "R1_ENDPOINT_NAME": endpoint}
    env.update({k if k.startswith("R1_") else f"R1_{k.upper()}": v for k, v in extra.items()})
    return env


def knobs(**values: Any) -> str:
    """R1_ENVIRONMENT_VARIABLES for fake engine knobs (``knobs(error_rate=0.5)``)."""
    return json.dumps({f"FAKE_ENGINE_{k.upper()}": str(v) for k, v in values.items()})


def run_flow(monkeypatch, env: dict[str, str]):
    """Run the flow in this process under the test Prefect API with ``env`` set; returns its final state."""
    from flows.rollout import rollout

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return rollout(return_state=True)


def run_in_process(monkeypatch, env: dict[str, str]) -> tuple[str, Any]:
    """("completed", result dict) or ("failed", the exception the flow ended with)."""
    result = run_flow(monkeypatch, env).result(raise_on_failure=False)
    return ("failed" if isinstance(result, Exception) else "completed"), result


def cli_env(env: dict[str, str], prefect_home: Path) -> dict[str, str]:
    """A subprocess environment: no stray R1_* variables, its own Prefect home, patient server start-up."""
    # AZUREML_CURRENT_CLOUD: the SDK's process-wide cloud, set by clients.ml_client in this process
    base = {k: v for k, v in os.environ.items() if not k.startswith(("R1_", "PREFECT_", "AZUREML_"))}
    return {**base, **env, "PREFECT_HOME": str(prefect_home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "DO_NOT_TRACK": "1", "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
            "PYTHONPATH": str(REPO_ROOT)}


def run_cli(env: dict[str, str], prefect_home: Path, timeout: float = 600) -> tuple[int, dict[str, Any], str]:
    """``python -m flows.rollout --json`` as a user runs it: (exit code, JSON outcome, stderr)."""
    proc = subprocess.run([sys.executable, "-m", "flows.rollout", "--json"], cwd=REPO_ROOT,
                          env=cli_env(env, prefect_home), capture_output=True, text=True, timeout=timeout)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    return proc.returncode, (json.loads(lines[-1]) if lines else {}), proc.stderr


def report(outcome: Any) -> dict[str, Any]:
    """The rollout.json of a run, from its result dict or its exception's report_dir."""
    folder = outcome["report_dir"] if isinstance(outcome, dict) else outcome.report_dir
    return json.loads((Path(folder) / "rollout.json").read_text())


def steps(record: dict[str, Any]) -> list[tuple[str, str]]:
    return [(e["step"], e["status"]) for e in record["events"]]


def live_deployments(ml, endpoint: str) -> tuple[dict[str, int], list[str]]:
    """(traffic, deployment names) as Azure reports them now."""
    ep = ml.online_endpoints.get(endpoint)
    return ({k: v for k, v in (ep.traffic or {}).items() if v},
            sorted(d.name for d in ml.online_deployments.list(endpoint)))
