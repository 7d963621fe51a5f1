"""rotate-keys against the emulator: under a live load whose client refreshes its key on 401 no request fails while
both keys change; no key reaches a log, artifact, report, output or exception; token endpoints have nothing to
rotate; a rollout's lock refuses the rotation."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path

import pytest
from azure.ai.ml.entities import ManagedOnlineEndpoint

from flows.rotate_keys import main, rotate_keys
from tasks.azureml.endpoint import scoring_base, update_tags
from tasks.azureml.scoring import scoring_bearer
from tasks.cli import EXIT_INVALID, EXIT_OK, InputError
from tasks.loadtest.client import BackgroundLoad, Destination
from tasks.loadtest.spec import LoadSpec
from tasks.rollout.lock import LOCK_TAG, Holder
from tests.test_rollout_secrets import JWT, prefect_texts


def hashes(ml, endpoint: str) -> tuple[str, str]:
    keys = ml.online_endpoints.get_keys(endpoint)
    return tuple(hashlib.sha256(k.encode()).hexdigest() for k in (keys.primary_key, keys.secondary_key))


@pytest.fixture
def env(emulator, monkeypatch, tmp_path):
    def set_env(endpoint: str) -> None:
        for name, value in {"R1_EMULATOR_STATE_DIR": str(emulator.state_dir), "R1_ENDPOINT_NAME": endpoint,
                            "R1_REPORTS_DIR": str(tmp_path / "reports"), "R1_LOAD_GATE__MAX_TOKENS": "8"}.items():
            monkeypatch.setenv(name, value)
    return set_env


@pytest.fixture
def serving(ml, endpoint, fake_deployment, emulator, wait_for):
    """A key-auth endpoint whose blue deployment (fake engine) serves 100 %, and a refreshing client of it."""
    ml.online_deployments.begin_create_or_update(fake_deployment(endpoint)).result()
    ep = ml.online_endpoints.get(endpoint)
    ep.traffic = {"blue": 100}
    ep = ml.online_endpoints.begin_create_or_update(ep).result()
    bearer = scoring_bearer(lambda: ml.online_endpoints.get_keys(endpoint))
    dest = Destination(scoring_base(ep), bearer, None, emulator.conn["ca_cert"])
    probe = LoadSpec(requests=1, max_tokens=4, model="m")

    def scores() -> bool:
        import asyncio

        from tasks.loadtest.client import run_load
        return asyncio.run(run_load(dest, probe)).records[0].ok

    wait_for(scores, what="the blue deployment to score")
    return endpoint, bearer, dest


def test_rotation_under_load_fails_no_request_and_leaks_no_key(ml, serving, env, prefect_api, wait_for, tmp_path,
                                                               caplog, capfd):
    caplog.set_level(logging.DEBUG)
    endpoint, bearer, dest = serving
    env(endpoint)
    keys_before = ml.online_endpoints.get_keys(endpoint)
    before = hashes(ml, endpoint)
    live = BackgroundLoad(dest, LoadSpec(rate=25, max_concurrency=16, duration_s=300, max_tokens=8, model="m")).start()
    try:
        state = rotate_keys(grace_seconds=0.5, return_state=True)
        wait_for(lambda: bearer.refreshes >= 1, what="the load to meet the new primary key")
        time.sleep(0.5)  # a little traffic on the new key after the refresh
    finally:
        run = live.stop()
    result = state.result(raise_on_failure=False)
    assert isinstance(result, dict) and result["outcome"] == "rotated", result
    assert [k["key"] for k in result["keys"]] == ["secondary", "primary"]
    assert all(k["changed"] and k["verified requests"] == 2 for k in result["keys"])

    after = hashes(ml, endpoint)
    assert after[0] != before[0] and after[1] != before[1]  # both keys really changed
    assert len(run.records) >= 20
    assert [(r.index, r.error) for r in run.records if not r.ok] == []  # zero failed requests
    assert bearer.refreshes == 1  # the primary changed under the load once, and one fetch served the burst
    assert LOCK_TAG not in (ml.online_endpoints.get(endpoint).tags or {})  # the lock was released

    keys_after = ml.online_endpoints.get_keys(endpoint)
    secrets = [keys_before.primary_key, keys_before.secondary_key, keys_after.primary_key, keys_after.secondary_key]
    files = [p for p in (tmp_path / "reports").rglob("*") if p.is_file()]
    assert [p.name for p in files] == ["rotate-keys.json"]
    out, err = capfd.readouterr()
    blob = "\n".join(prefect_texts(state.state_details.flow_run_id) + [str(result), repr(result), caplog.text, out, err]
                     + [p.read_text() for p in files])
    assert len(set(secrets)) == 4 and all(len(s) >= 16 for s in secrets)
    assert [s[:6] + "..." for s in secrets if s in blob] == []
    assert JWT.findall(blob) == []


def test_token_endpoint_has_no_keys_to_rotate(ml, unique_name, env, prefect_api, capsys):
    name = unique_name("tok")
    ml.online_endpoints.begin_create_or_update(ManagedOnlineEndpoint(name=name, auth_mode="aml_token")).result()
    env(name)
    try:
        code = main(["--json", "--grace-seconds", "0"])
        outcome = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    finally:
        ml.online_endpoints.begin_delete(name).result()
    assert code == EXIT_OK
    assert outcome["outcome"] == "nothing to rotate" and "no long-lived keys" in outcome["detail"]
    assert json.loads((Path(outcome["report_dir"]) / "rotate-keys.json").read_text())["auth_mode"] == "aml_token"


def test_refused_while_a_rollout_holds_the_lock(ml, endpoint, env, prefect_api, capsys):
    env(endpoint)
    held = Holder("rollout1", "another-host", 4242, time.time() + 3600).encode()
    update_tags(ml, endpoint, {LOCK_TAG: held})
    before = hashes(ml, endpoint)
    code = main(["--json", "--grace-seconds", "0"])
    outcome = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == EXIT_INVALID and outcome["outcome"] == "refused"
    assert "rollout1 on another-host" in outcome["reason"]
    assert hashes(ml, endpoint) == before  # nothing changed
    assert ml.online_endpoints.get(endpoint).tags[LOCK_TAG] == held  # the rollout's lock is left alone


def test_negative_grace_is_invalid_input():
    with pytest.raises(InputError, match="grace_seconds"):
        main(["--grace-seconds", "-1"])

