"""Keys and tokens never leak: after rollouts with key and aad_token auth (one promoted, one rolled
back), none of the endpoint keys, the emulator's client secret or any JWT appears in the report files,
the flow runs' logs, their Prefect artifacts, captured output, or the exception text."""

from __future__ import annotations

import logging
import re

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, LogFilter, LogFilterFlowRunId
from prefect.logging.handlers import APILogWorker

from tasks import clients
from tests.rollout_support import fast_env, knobs, run_flow

JWT = re.compile(r"eyJ[\w-]{8,}\.[\w-]{8,}\.[\w-]{8,}")


def prefect_texts(flow_run_id) -> list[str]:
    # Logs reach the API in batches every 2 s; a run that ends quickly (a smoke test failing at once) would
    # otherwise be read before its last batch was sent, and an empty list scans nothing.
    APILogWorker.drain_all(timeout=5)
    with get_client(sync_client=True) as client:
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
    assert logs and artifacts  # the scan below must have something to scan
    return [log.message for log in logs] + [str(a.data) + str(a.description) for a in artifacts]


def test_no_key_or_token_anywhere(emulator, prefect_api, monkeypatch, tmp_path, unique_name, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    ml = clients.ml_client(emulator.settings())
    reports = tmp_path / "reports"
    texts, secrets = [], [emulator.state.client_secret.read_text().strip()]
    for auth_mode, extra in (("key", {}), ("aad_token", {"R1_ENVIRONMENT_VARIABLES": knobs(error_rate=0.5)})):
        endpoint = unique_name(f"secret-{auth_mode[:3]}")
        state = run_flow(monkeypatch, fast_env(emulator.state_dir, reports, endpoint, R1_AUTH_MODE=auth_mode,
                                               **extra))
        result = state.result(raise_on_failure=False)
        texts += prefect_texts(state.state_details.flow_run_id) + [str(result), repr(result)]
        creds = ml.online_endpoints.get_keys(endpoint)
        secrets += [v for v in (getattr(creds, "primary_key", None), getattr(creds, "secondary_key", None),
                                getattr(creds, "access_token", None)) if v]
    assert any("rolled back" in t.lower() for t in texts)  # the aad_token run failed on purpose

    files = [p for p in reports.rglob("*") if p.is_file()]
    assert {p.suffix for p in files} >= {".md", ".json", ".png"}
    out, err = capfd.readouterr()
    texts += [p.read_bytes().decode("utf-8", "replace") for p in files] + [caplog.text, out, err]
    blob = "\n".join(texts)
    assert len(secrets) >= 4 and all(len(s) >= 16 for s in secrets)
    assert [s[:6] + "..." for s in secrets if s in blob] == []
    assert JWT.findall(blob) == []
