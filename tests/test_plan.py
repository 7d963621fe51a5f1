"""The plan flow: pure evaluation, the report (no secrets), the Prefect flow, and the CLI contract."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from flows.plan import evaluate, plan, summary
from tasks.policy.report import REDACTED, to_markdown
from tasks.settings import REPO_ROOT
from tasks.plan.specs import DEPLOYMENT_YML, DOCKERFILE

GUIDE = Path(__file__).parent / "fixtures" / "guide"
GUIDE_ARGS = {
    "endpoint_yaml": str(GUIDE / "endpoint.yml"),
    "deployment_yaml": str(GUIDE / "deployment.yml"),
    "dockerfile": str(GUIDE / "Dockerfile"),
}
FINDING_KEYS = {"rule", "category", "severity", "message", "remediation", "waived"}


def test_default_settings_pass_with_no_error_findings():
    report = evaluate()
    assert report["ok"] is True
    assert not [f for f in report["findings"] if f["severity"] == "error"]
    capacity = report["capacity"]
    assert capacity["recommended_max_num_seqs"] == capacity["configured"]["max_num_seqs"]
    assert capacity["recommended_request_timeout_ms"] == capacity["configured"]["request_timeout_ms"]
    assert set(report["specs"]["rendered"]) >= {DOCKERFILE, DEPLOYMENT_YML}
    assert report["specs"]["sources"] == {"endpoint": "settings", "deployment": "settings", "dockerfile": "settings"}
    json.dumps(report)  # the --json contract: plain data


def test_guide_is_blocked():
    report = evaluate(**GUIDE_ARGS)
    assert report["ok"] is False
    assert all(FINDING_KEYS <= set(f) for f in report["findings"])
    errors = {f["category"] for f in report["findings"] if f["severity"] == "error"}
    assert {"image", "network", "model-supply", "capacity"} <= errors
    assert report["specs"]["sources"]["deployment"].endswith("guide/deployment.yml")


def test_literal_secrets_never_reach_the_report(monkeypatch):
    secret = "hf_" + "Q" * 34
    monkeypatch.setenv("R1_ENVIRONMENT_VARIABLES", json.dumps({"HF_TOKEN": secret}))
    monkeypatch.setenv("R1_VLLM__EXTRA_ARGS", json.dumps(["--api-key", "vllm-key-4711", "--hf-token", "hf_tok_99"]))
    monkeypatch.setenv("R1_HF_TOKEN", "hf_settings_secret_0815")
    report = evaluate()
    assert {f["rule"] for f in report["findings"]} == {"literal-secret-in-environment"}
    text = json.dumps(report) + to_markdown(report)
    for value in (secret, "vllm-key-4711", "hf_tok_99", "hf_settings_secret_0815"):
        assert value not in text
    assert REDACTED in report["specs"]["rendered"][DEPLOYMENT_YML]


def test_markdown_lists_findings_waivers_and_capacity(monkeypatch):
    monkeypatch.setenv("R1_AUTH_MODE", "key")
    monkeypatch.setenv("R1_PUBLIC_NETWORK_ACCESS", "enabled")
    waiver = {"rule": "endpoint-public-network-access", "reason": "pilot | phase 1"}
    monkeypatch.setenv("R1_POLICY_WAIVERS", json.dumps([waiver]))
    report = evaluate()
    md = to_markdown(report)
    assert md.startswith("# Rollout plan") and "**PASS**" in md
    assert "| warning | `key-auth-without-rotation` | auth |" in md
    assert "pilot \\| phase 1" in md  # table cells escape pipes
    assert "| kv_bytes_per_token | 131072 |" in md
    assert "(waived)" in summary({**report, "report_dir": "x"})


def test_flow_writes_report_artifact_and_renders_only_when_ok(prefect_api, monkeypatch, tmp_path):
    from prefect.artifacts import Artifact

    monkeypatch.setenv("R1_REPORTS_DIR", str(tmp_path / "reports"))
    ok = plan(render_to=str(tmp_path / "out"))
    report_dir = Path(ok["report_dir"])
    assert report_dir.parent == tmp_path / "reports" and report_dir.name.startswith("plan-")
    assert json.loads((report_dir / "plan.json").read_text())["ok"] is True
    assert (report_dir / "plan.md").read_text() == to_markdown(evaluate())
    assert (tmp_path / "out" / DOCKERFILE).read_text() == (REPO_ROOT / DOCKERFILE).read_text()
    artifact = Artifact.get("plan")
    assert artifact is not None and "# Rollout plan" in artifact.data

    blocked = plan(render_to=str(tmp_path / "blocked"), **GUIDE_ARGS)
    assert blocked["ok"] is False and not (tmp_path / "blocked").exists()


def run_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("R1_", "PREFECT_API"))}
    env.update(
        PREFECT_HOME=str(tmp_path / "prefect-home"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="180",
        R1_REPORTS_DIR=str(tmp_path / "reports"),
    )
    return subprocess.run([sys.executable, "-m", "flows.plan", "--json", *args], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=400)


@pytest.mark.slow
def test_cli_default_settings_exit_0_with_one_json_object_on_stdout(tmp_path):
    result = run_cli(tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)  # exactly one JSON object: Prefect and SDK output went to stderr
    assert result.stdout.count("\n") == 1
    assert report["ok"] is True and not [f for f in report["findings"] if f["severity"] == "error"]
    assert {"ok", "findings", "capacity", "specs"} <= set(report)
    assert "Finished in state Completed" in result.stderr
    assert (Path(report["report_dir"]) / "plan.json").is_file()


@pytest.mark.slow
def test_cli_guide_files_exit_1(tmp_path):
    result = run_cli(tmp_path, "--endpoint-yaml", str(GUIDE / "endpoint.yml"),
                     "--deployment-yaml", str(GUIDE / "deployment.yml"), "--dockerfile", str(GUIDE / "Dockerfile"))
    assert result.returncode == 1, result.stderr[-2000:]
    report = json.loads(result.stdout)
    assert report["ok"] is False
    assert {"image", "network", "model-supply", "capacity"} <= {
        f["category"] for f in report["findings"] if f["severity"] == "error"}
    assert "telemetry" in {f["category"] for f in report["findings"]}
