"""The README quick start, tested: rollouts on the local emulator with the real vLLM engine, with
exactly the settings in profiles/local-vllm.env (what `./r1 rollout` runs): the first one, then a
change that shifts live traffic from blue to green."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from emulator import process
from tests.rollout_support import REPO_ROOT, run_cli, steps


def profile(path: Path) -> dict[str, str]:
    """KEY=VALUE lines as a shell sourcing the file would see them."""
    lines = [line for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
    pairs = [shlex.split(line)[0] for line in lines]
    return dict(pair.split("=", 1) for pair in pairs)


def check_report(folder: Path, shifts: set[str]) -> None:
    record = json.loads((folder / "rollout.json").read_text())
    passed = {step for step, status in steps(record) if status == "ok"}
    assert {"ready", "smoke", "load-gate", "autoscale", *shifts} <= passed, steps(record)
    assert all(check["problems"] == [] for check in record["smoke"])
    assert record["load_gate"]["requests_failed"] == 0
    assert (folder / "rollout.md").read_text().startswith(f"# Rollout {record['run_id']}: promoted")
    assert (folder / "rollout.png").stat().st_size > 10_000


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_quick_start_rollout_with_real_vllm(tmp_path):
    env = {**profile(REPO_ROOT / "profiles" / "local-vllm.env"),
           "R1_EMULATOR_STATE_DIR": str(tmp_path / "emulator"), "R1_REPORTS_DIR": str(tmp_path / "reports")}
    try:
        code, outcome, stderr = run_cli(env, tmp_path / "prefect-home", timeout=2200)
        assert code == 0, stderr[-5000:]
        assert (outcome["outcome"], outcome["new"], outcome["traffic"]) == ("promoted", "blue", {"blue": 100})
        check_report(Path(outcome["report_dir"]), shifts={"shift 100 %"})
        built = json.loads((Path(outcome["report_dir"]) / "rollout.json").read_text())["image_build"]
        assert built["built"] and built["image"].startswith("r1emulatoracr.azurecr.io/r1-vllm@sha256:")

        # a vLLM argument changes: green is staged, takes 50 % then 100 % of live traffic, blue retired
        code, outcome, stderr = run_cli({**env, "R1_VLLM__MAX_NUM_SEQS": "64",
                                         "R1_MAX_CONCURRENT_REQUESTS_PER_INSTANCE": "64"},
                                        tmp_path / "prefect-home", timeout=2200)
        assert code == 0, stderr[-5000:]
        assert (outcome["outcome"], outcome["new"], outcome["traffic"]) == ("promoted", "green", {"green": 100})
        check_report(Path(outcome["report_dir"]), shifts={"shift 50 %", "shift 100 %"})
        again = json.loads((Path(outcome["report_dir"]) / "rollout.json").read_text())["image_build"]
        assert (again["built"], again["image"]) == (False, built["image"])  # docker/ unchanged: reused
    finally:
        process.stop(tmp_path / "emulator")  # the flow started it detached, to outlive the run
