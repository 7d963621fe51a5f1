"""End to end with the real vLLM engine: the unmodified SDK creates an endpoint and two deployments on
the emulator, and the OpenAI client, the seed guide's ``requests`` snippet and plain HTTPS reach
real vLLM instances through the scoring gateway."""

from __future__ import annotations

import hashlib
import ssl
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from azure.ai.ml.entities import (
    Environment, ManagedOnlineDeployment, ManagedOnlineEndpoint, OnlineRequestSettings, ProbeSettings,
)
from openai import OpenAI

from emulator.engines.vllm import LOCAL_PROFILE
from tasks import clients
from tests.test_vllm_engine import SERVED_NAME, real_engine  # noqa: F401  (fixture: builds the engine)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

IMAGE = "local/r1-vllm@sha256:" + hashlib.sha256(b"r1-vllm e2e").hexdigest()
QUESTION = "Which is better, summer or winter?"
COLOURS = ("blue", "green")


def vllm_deployment(endpoint: str, colour: str, vllm_args: str) -> ManagedOnlineDeployment:
    routes = {"port": 8000, "path": "/health"}
    return ManagedOnlineDeployment(
        name=colour, endpoint_name=endpoint, instance_type="Standard_NC24ads_A100_v4", instance_count=1,
        environment=Environment(image=IMAGE, inference_config={
            "liveness_route": routes, "readiness_route": routes, "scoring_route": {"port": 8000, "path": "/"}}),
        environment_variables={"MODEL_NAME": SERVED_NAME, "MODEL_PATH": "/var/azureml-app/model", "VLLM_ARGS": vllm_args},
        request_settings=OnlineRequestSettings(request_timeout_ms=90_000, max_concurrent_requests_per_instance=8),
        # vLLM starts in 0.5-2 minutes on a busy 2-core CPU; two start side by side.
        readiness_probe=ProbeSettings(initial_delay=5, period=2, timeout=2, failure_threshold=300),
        liveness_probe=ProbeSettings(initial_delay=600, period=10, timeout=5, failure_threshold=30),
    )


@pytest.fixture(scope="module")
def endpoint(emulator, real_engine):  # noqa: F811
    """A key-auth endpoint with two real vLLM deployments, 70/30; yields (ml, endpoint, key, ca)."""
    with pytest.MonkeyPatch.context() as mp:
        for name, value in LOCAL_PROFILE.items():
            mp.setenv(name, value)
        settings = emulator.settings()
    ml = clients.ml_client(settings)
    name = f"e2e-{uuid.uuid4().hex[:10]}"
    ml.online_endpoints.begin_create_or_update(ManagedOnlineEndpoint(name=name, auth_mode="key")).result()
    try:
        started = time.monotonic()
        pollers = [ml.online_deployments.begin_create_or_update(
            vllm_deployment(name, colour, settings.vllm.to_env_value())) for colour in COLOURS]
        for poller in pollers:
            assert poller.result().provisioning_state == "Succeeded"
        print(f"two vLLM deployments ready after {time.monotonic() - started:.0f} s")
        live = ml.online_endpoints.get(name)
        live.traffic = {"blue": 70, "green": 30}
        live = ml.online_endpoints.begin_create_or_update(live).result()
        key = ml.online_endpoints.get_keys(name).primary_key
        yield ml, live, key, clients.data_plane_ca(settings)
    finally:
        ml.online_endpoints.begin_delete(name).result()


def test_openai_client_streams_reasoning_then_answer_through_the_gateway(endpoint):
    _, live, key, ca = endpoint
    base = live.scoring_uri.removesuffix("/score") + "/v1"
    with httpx.Client(verify=ssl.create_default_context(cafile=ca), trust_env=False) as http:
        client = OpenAI(base_url=base, api_key=key, http_client=http, max_retries=0)
        started = time.monotonic()
        stream = client.chat.completions.create(
            model=SERVED_NAME, messages=[{"role": "user", "content": QUESTION}], max_tokens=200,
            temperature=0, stream=True, stream_options={"include_usage": True},
        )
        kinds, usage = [], None
        for chunk in stream:
            usage = chunk.usage or usage
            for choice in chunk.choices:
                if getattr(choice.delta, "reasoning", None):
                    kinds.append("reasoning")
                if choice.delta.content:
                    kinds.append("content")
        print(f"streamed through the gateway in {time.monotonic() - started:.2f} s, {len(kinds)} chunks")
    assert "reasoning" in kinds and "content" in kinds, kinds
    assert "reasoning" not in kinds[kinds.index("content"):], "reasoning first, then the answer"
    assert kinds.count("content") > 1, "the answer arrives in pieces, not buffered into one"
    assert usage is not None and usage.completion_tokens >= len(kinds)


def test_the_guides_requests_snippet_gets_a_json_answer(endpoint, monkeypatch):
    import requests

    _, live, key, ca = endpoint
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", ca)  # the emulator's CA: the snippet itself is unchanged
    # --- the seed guide's snippet, verbatim apart from the placeholders ---
    url = live.scoring_uri
    headers = {
        "Content-Type": "application/json",
        "Authorization": f"Bearer {key}"
    }
    data = {
        "model": "deepseek-ai/DeepSeek-R1-Distill-Llama-8B",
        "messages": [{"role": "user", "content": "Which is better, summer or winter?"}],
        "max_tokens": 750
    }
    response = requests.post(url, headers=headers, json=data)
    print(response.json())
    # ---
    assert response.status_code == 200
    answer = response.json()
    assert answer["model"] == SERVED_NAME
    assert answer["usage"]["completion_tokens"] > 0
    message = answer["choices"][0]["message"]
    assert (message["reasoning"] or "").strip(), "R1 thinks first; the parser files it as reasoning"
    assert "</think>" not in (message["content"] or "")
    assert response.headers["azureml-model-deployment"] in COLOURS


def test_two_real_deployments_split_traffic_as_set(endpoint):
    _, live, key, ca = endpoint
    chat = {"model": SERVED_NAME, "messages": [{"role": "user", "content": QUESTION}], "max_tokens": 1}
    requests_sent = 200
    with httpx.Client(verify=ssl.create_default_context(cafile=ca), trust_env=False, timeout=90,
                      headers={"Authorization": f"Bearer {key}"}) as http:
        def served_by(_: int) -> tuple[int, str]:
            answer = http.post(live.scoring_uri, json=chat)
            return answer.status_code, answer.headers.get("azureml-model-deployment", "")

        with ThreadPoolExecutor(max_workers=6) as pool:  # below Azure's 2 x 8 in-flight limit
            results = list(pool.map(served_by, range(requests_sent)))
        targeted = http.post(live.scoring_uri, json=chat, headers={"azureml-model-deployment": "green"})
    assert {status for status, _ in results} == {200}
    served = Counter(colour for _, colour in results)
    print(f"served: {dict(served)}")
    assert set(served) == set(COLOURS)
    assert 0.6 <= served["blue"] / requests_sent <= 0.8  # 70 % +- 3 standard deviations
    assert targeted.status_code == 200 and targeted.headers["azureml-model-deployment"] == "green"


def test_container_logs_are_vllms_own(endpoint):
    ml, live, _, _ = endpoint
    logs = ml.online_deployments.get_logs("green", live.name, lines=400)
    assert "vllm" in logs.lower()
    assert "Application startup complete" in logs
