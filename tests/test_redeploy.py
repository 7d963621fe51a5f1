"""The redeploy flow on the emulator's fake engine: a no-op that says what it checked, a published base digest
(read from the upstream's registry API, which status sees too; imported by that digest into the workspace
registry, built FROM that copy, rolled out: a new image digest serves), a new model version (the serving image
with the new model), and bad or unknown R1_UPSTREAM_BASE refused with no change."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from azure.ai.ml.entities import Model

from flows.redeploy import main, redeploy
from tasks.cli import run_cli
from tasks.plan.specs import ENVIRONMENT_NAME
from tasks.redeploy.inputs import digest_of, upstream_drift
from tasks.rollout.tags import IMAGE_TAG, MODEL_TAG
from tests.rollout_support import FAKE_BASE, fast_env, live_deployments, run_in_process

FAKE_REPO = "r1emulator/fake-vllm-openai"


def publish(emulator, tag: str, digest: str) -> None:
    response = emulator.admin("POST", "/_emulator/upstream", json={"image": tag, "digest": digest})
    assert response.status_code == 200, response.text


def run_redeploy(monkeypatch, env: dict[str, str]):
    """("completed", result dict) or ("failed", the exception), as for the rollout."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    result = redeploy(return_state=True).result(raise_on_failure=False)
    return ("failed" if isinstance(result, Exception) else "completed"), result


def cli(monkeypatch, capsys, env: dict[str, str]) -> tuple[int, dict]:
    """``python -m flows.redeploy --json`` in this process: (exit code, the JSON it printed)."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as exited:
        run_cli(lambda: main(["--json"]))
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    return exited.value.code, (json.loads(lines[-1]) if lines else {})


def recorded(result: dict) -> dict:
    return json.loads((Path(result["report_dir"]) / "redeploy.json").read_text())


def inputs(result: dict) -> dict[str, dict]:
    return {i["input"]: i for i in recorded(result)["inputs"]}


def base_of(ml, image: str) -> str:
    return next(e.tags["base_image"] for e in ml.environments.list(name=ENVIRONMENT_NAME) if e.image == image)


def test_noop_then_a_published_base_digest_is_built_and_rolled_out(emulator, prefect_api, monkeypatch, tmp_path,
                                                                   unique_name, ml):
    endpoint = unique_name("redeploy")
    tag = f"{FAKE_REPO}:rd{uuid.uuid4().hex[:8]}"
    publish(emulator, tag, digest_of(FAKE_BASE))  # the release the first rollout's base came from
    env = fast_env(emulator.state_dir, tmp_path / "reports", endpoint, R1_MODEL_ASSET=f"{endpoint}-model:1")
    status, first = run_in_process(monkeypatch, env)
    assert status == "completed" and first["new"] == "blue", first
    blue_image = ml.online_deployments.get(name="blue", endpoint_name=endpoint).tags[IMAGE_TAG]

    tracked = {**env, "R1_UPSTREAM_BASE": tag}
    status, noop = run_redeploy(monkeypatch, tracked)
    assert status == "completed" and noop["outcome"] == "no-op", noop
    checked = inputs(noop)
    assert checked["base"]["changed"] is False and checked["base"]["new"].endswith(digest_of(FAKE_BASE))
    assert checked["model"] == {**checked["model"], "old": f"{endpoint}-model:1", "new": f"{endpoint}-model:1",
                                "changed": False}
    assert "base: " in noop["reason"] and "model: " in noop["reason"]
    assert live_deployments(ml, endpoint) == ({"blue": 100}, ["blue"])

    patched = "sha256:" + uuid.uuid4().hex * 2
    publish(emulator, tag, patched)
    drift = {c.input: c for c in upstream_drift(ml, None, emulator.settings(endpoint_name=endpoint,
                                                                            upstream_base=tag,
                                                                            model_asset=f"{endpoint}-model:1"))}
    assert drift["base"].changed is True and drift["base"].new.endswith(patched)  # read upstream: no import
    assert drift["model"].changed is False
    status, moved = run_redeploy(monkeypatch, tracked)
    assert status == "completed" and moved["outcome"] == "redeployed", moved
    assert live_deployments(ml, endpoint) == ({"green": 100}, ["green"])
    green_image = ml.online_deployments.get(name="green", endpoint_name=endpoint).tags[IMAGE_TAG]
    assert green_image == moved["image"]["new"] != blue_image and moved["image"]["old"] == blue_image
    assert digest_of(green_image) != digest_of(blue_image)
    copy = f"r1emulatoracr.azurecr.io/{FAKE_REPO}@{patched}"
    assert base_of(ml, green_image) == copy  # FROM the workspace registry's copy, pinned by digest
    base = inputs(moved)["base"]
    assert (base["old"], base["new"], base["changed"]) == (FAKE_BASE, copy, True)
    assert recorded(moved)["rollout"]["outcome"] == "promoted"

    status, again = run_redeploy(monkeypatch, tracked)
    assert status == "completed" and again["outcome"] == "no-op", again


def test_a_new_model_version_rolls_out_on_the_serving_image_then_bad_bases_are_refused(
        emulator, prefect_api, monkeypatch, capsys, tmp_path, unique_name, ml):
    endpoint = unique_name("remodel")
    asset = f"{endpoint}-model"
    env = fast_env(emulator.state_dir, tmp_path / "reports", endpoint, R1_MODEL_ASSET=f"{asset}:1")
    assert run_in_process(monkeypatch, env)[0] == "completed"
    blue_image = ml.online_deployments.get(name="blue", endpoint_name=endpoint).tags[IMAGE_TAG]
    s = emulator.settings()
    ml.models.create_or_update(Model(name=asset, version="2", path=s.model_asset_path, type="custom_model"))

    code, moved = cli(monkeypatch, capsys, env)
    assert code == 0 and moved["outcome"] == "redeployed", moved
    green = ml.online_deployments.get(name="green", endpoint_name=endpoint).tags
    assert (green[MODEL_TAG], green[IMAGE_TAG]) == (f"{asset}:2", blue_image)
    checked = inputs(moved)
    assert checked["base"]["changed"] is None and "not tracked" in checked["base"]["note"]
    assert (checked["model"]["old"], checked["model"]["new"], checked["model"]["changed"]) == \
        (f"{asset}:1", f"{asset}:2", True)

    before = live_deployments(ml, endpoint), len(list(ml.environments.list(name=ENVIRONMENT_NAME)))
    code, refused = cli(monkeypatch, capsys, {**env, "R1_UPSTREAM_BASE": f"{FAKE_REPO}:no-such-tag"})
    assert code == 2 and refused["outcome"] == "refused", refused
    assert f"R1_UPSTREAM_BASE=docker.io/{FAKE_REPO}:no-such-tag: no such tag upstream" in refused["reason"]
    assert (live_deployments(ml, endpoint), len(list(ml.environments.list(name=ENVIRONMENT_NAME)))) == before


@pytest.mark.parametrize("value", [FAKE_BASE, f"{FAKE_REPO}", "Not A Tag:1"])
def test_an_upstream_base_that_is_not_a_tag_is_invalid_before_any_call(monkeypatch, capsys, tmp_path, value):
    monkeypatch.setenv("R1_UPSTREAM_BASE", value)
    monkeypatch.setenv("R1_EMULATOR_STATE_DIR", str(tmp_path / "none"))  # nothing starts, nothing is called
    with pytest.raises(SystemExit) as exited:
        run_cli(lambda: main([]))
    assert exited.value.code == 2 and "R1_UPSTREAM_BASE" in capsys.readouterr().err
    assert not (tmp_path / "none").exists()
