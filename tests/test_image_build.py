"""The image build through the unmodified SDK clients against the emulator's registry: build, reuse, rebuild,
failures (Dockerfile line, timeout), throttling retried, the log streamed, and no SAS anywhere."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
import uuid
from functools import partial
from pathlib import Path

import pytest
from azure.core.exceptions import ResourceNotFoundError

from tasks import clients
from tasks.azureml import environment, registry
from tasks.image.build import ImageBuildFailed, build_or_reuse
from tasks.image.context import build_context
from tasks.plan.specs import render_dockerfile
from tasks.settings import load_settings
from tests.rollout_support import FAKE_BASE, REPO_ROOT, cli_env, fast_env, report, run_in_process
from tests.test_rollout_secrets import prefect_texts

SAS = re.compile(r"\b(sig|se)=(?!REDACTED)[^&\s'\"]+")  # a SAS query's signature or expiry, not azure-core's redaction


def dockerfile(tmp_path: Path, text: str | None = None) -> Path:
    """A hand-written context of its own (a unique file, so no other test's build is reused)."""
    folder = tmp_path / f"ctx-{uuid.uuid4().hex[:8]}"
    folder.mkdir()
    (folder / "nonce.txt").write_text(folder.name)
    path = folder / "Dockerfile"
    path.write_text(text if text is not None else render_dockerfile(load_settings(base_image=FAKE_BASE)))
    return path


def broken() -> tuple[str, int]:
    """The rendered fake-base Dockerfile with an unknown instruction the gate does not judge; (text, its line)."""
    text = render_dockerfile(load_settings(base_image=FAKE_BASE)).replace("EXPOSE 8000", "EXPOSE 8000\nFORM x")
    return text, text.splitlines().index("FORM x") + 1


def build(s, lines: list[str] | None = None):
    return build_or_reuse(clients.ml_client(s), clients.registry_client(s), partial(clients.blob_client, s),
                          s.workspace, build_context(s), s.image_build_timeout_s,
                          (lines if lines is not None else []).append)


def test_build_then_reuse_then_rebuild_after_a_change(emulator, tmp_path):
    path = dockerfile(tmp_path)
    s = emulator.settings(dockerfile=path)
    lines: list[str] = []
    first = build(s, lines)
    assert first.built and first.run_id and first.image.startswith("r1emulatoracr.azurecr.io/r1-vllm@sha256:")
    assert any(line.startswith("Step 1/") for line in lines), lines  # the run's log, streamed
    assert any(first.image.split("@")[1] in line for line in lines)
    ml = clients.ml_client(s)
    registered = ml.environments.get("r1-vllm", version=first.environment.split(":")[1])
    assert registered.image == first.image and registered.tags["context_hash"] == build_context(s).hash
    assert registered.tags["base_image"] == FAKE_BASE and registered.tags["build_run"] == first.run_id

    versions = len(list(ml.environments.list(name="r1-vllm")))
    again = build(s)
    assert (again.built, again.run_id, again.image, again.environment) == (False, None, first.image, first.environment)
    assert len(list(ml.environments.list(name="r1-vllm"))) == versions  # no run, no new version

    path.write_text(path.read_text().replace("EXPOSE 8000", "EXPOSE 8000\nLABEL team=platform"))
    changed = build(emulator.settings(dockerfile=path))
    assert changed.built and changed.image != first.image and changed.environment != first.environment


def test_a_dockerfile_syntax_error_fails_the_run_with_its_line(emulator, tmp_path):
    text, line = broken()
    s = emulator.settings(dockerfile=dockerfile(tmp_path, text))
    with pytest.raises(ImageBuildFailed) as failed:
        build(s)
    assert f"Dockerfile:{line}" in str(failed.value) and failed.value.run_id in str(failed.value)
    assert any(f"Dockerfile:{line}" in t for t in failed.value.log_tail)
    assert environment.find_build(clients.ml_client(s), build_context(s).hash) is None


def test_a_build_past_the_timeout_is_cancelled(emulator, tmp_path):
    s = emulator.settings(dockerfile=dockerfile(tmp_path), image_build_timeout_s=2)
    emulator.set_faults(build_seconds=60)
    try:
        with pytest.raises(ImageBuildFailed, match="did not finish within R1_IMAGE_BUILD_TIMEOUT_S=2 s") as failed:
            build(s)
    finally:
        emulator.set_faults()
    acr = clients.registry_client(s)
    reg = registry.workspace_registry(clients.ml_client(s), acr, s.workspace)
    assert registry.run_state(acr, reg, failed.value.run_id).status == "Canceled"


def test_throttled_and_unavailable_registry_calls_are_retried(emulator, tmp_path):
    s = emulator.settings(dockerfile=dockerfile(tmp_path))
    emulator.set_faults(fail_next=3, statuses=[429, 503], retry_after=0)
    try:
        assert build(s).built
    finally:
        emulator.set_faults()


def test_the_build_image_command(emulator, tmp_path):
    """--json and its exit codes: 0 built, 0 reused, 1 failed (report with the log's end), 2 refused by the gate."""
    reports = tmp_path / "reports"

    def run(**env: str) -> tuple[int, dict, str]:
        base = {"R1_TARGET": "local", "R1_EMULATOR_STATE_DIR": str(emulator.state_dir), "R1_REPORTS_DIR": str(reports)}
        proc = subprocess.run([sys.executable, "-m", "flows.build_image", "--json"], cwd=REPO_ROOT, text=True,
                              env=cli_env({**base, **env}, tmp_path / "prefect"), capture_output=True, timeout=300)
        lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
        return proc.returncode, (json.loads(lines[-1]) if lines else {}), proc.stdout + proc.stderr

    good = str(dockerfile(tmp_path))
    code, out, text = run(R1_DOCKERFILE=good)
    assert code == 0 and out["built"] is True and out["run_id"], text
    assert set(out) >= {"image", "environment", "built", "context_hash", "run_id", "seconds"}
    code, again, _ = run(R1_DOCKERFILE=good)
    assert code == 0 and (again["built"], again["image"]) == (False, out["image"])

    bad = dockerfile(tmp_path, broken()[0])
    code, failed, text = run(R1_DOCKERFILE=str(bad))
    assert code == 1 and "Dockerfile:" in failed["reason"], text
    assert "Dockerfile:" in (Path(failed["report_dir"]) / "build.md").read_text()

    unpinned = dockerfile(tmp_path, "FROM r1emulator/fake-vllm-openai:latest\nUSER 10001\n")
    code, _, text = run(R1_DOCKERFILE=str(unpinned), R1_EMULATOR_STATE_DIR=str(tmp_path / "no-emulator"))
    assert code == 2 and "image-not-digest-pinned" in text
    assert not (tmp_path / "no-emulator").exists()  # refused before any cloud call: no emulator was even started

    files = [p.read_text() for p in reports.rglob("*") if p.is_file()]
    assert files and SAS.findall("\n".join(files) + text) == []


def test_the_flow_streams_the_build_log_into_prefect_and_leaks_no_sas(emulator, prefect_api, monkeypatch, tmp_path,
                                                                       caplog):
    from flows.build_image import build_image

    caplog.set_level(logging.DEBUG)
    for name, value in {"R1_TARGET": "local", "R1_EMULATOR_STATE_DIR": str(emulator.state_dir),
                        "R1_REPORTS_DIR": str(tmp_path / "reports"),
                        "R1_DOCKERFILE": str(dockerfile(tmp_path))}.items():
        monkeypatch.setenv(name, value)
    state = build_image(return_state=True)
    result = state.result()
    texts = prefect_texts(state.state_details.flow_run_id)
    assert any(t.startswith("Step 1/") for t in texts) and any("Successfully pushed" in t for t in texts)
    blob = "\n".join(texts + [caplog.text, json.dumps(result)])
    assert result["built"] and "rawtext.log" in caplog.text  # the SDK's request lines were captured...
    assert SAS.findall(blob) == []  # ...without a signature or expiry


def test_a_rollout_with_r1_image_empty_deploys_the_built_digest(emulator, prefect_api, monkeypatch, tmp_path,
                                                                unique_name):
    endpoint = unique_name("built")
    status, result = run_in_process(monkeypatch, fast_env(emulator.state_dir, tmp_path / "reports", endpoint))
    assert status == "completed" and result["outcome"] == "promoted", result
    record = report(result)
    built = record["image_build"]
    ml = clients.ml_client(emulator.settings())
    assert built["image"] == environment.find_build(ml, build_context(load_settings(base_image=FAKE_BASE)).hash).image
    image_event = next(e for e in record["events"] if e["step"] == "image")
    assert built["image"] in image_event["detail"] and ("built in run" in image_event["detail"]
                                                        or "reused" in image_event["detail"])


def test_a_failing_build_stops_the_rollout_before_anything_is_staged(emulator, prefect_api, monkeypatch, tmp_path,
                                                                     unique_name):
    endpoint = unique_name("nobuild")
    text, _ = broken()
    env = fast_env(emulator.state_dir, tmp_path / "reports", endpoint, R1_DOCKERFILE=str(dockerfile(tmp_path, text)))
    status, err = run_in_process(monkeypatch, env)
    assert status == "failed" and isinstance(err, ImageBuildFailed) and "Dockerfile:" in str(err)
    record = report(err)
    assert record["outcome"] == "failed" and record["image_build_log"]
    assert "Image build log" in (Path(err.report_dir) / "rollout.md").read_text()
    with pytest.raises(ResourceNotFoundError):
        clients.ml_client(emulator.settings()).online_endpoints.get(endpoint)  # nothing was created


def test_a_tagged_r1_image_is_refused(emulator, prefect_api, monkeypatch, tmp_path, unique_name):
    env = fast_env(emulator.state_dir, tmp_path / "reports", unique_name("tagged"),
                   R1_IMAGE="r1emulatoracr.azurecr.io/r1-vllm:1")
    status, err = run_in_process(monkeypatch, env)
    assert status == "failed" and type(err).__name__ == "Refused" and "not pinned by digest" in str(err)
