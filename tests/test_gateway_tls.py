"""The gateway over HTTPS with the emulator's throwaway CA, driven the ways users drive a scoring
URI: the seed guide's ``requests`` snippet and the OpenAI client."""

from __future__ import annotations

import ssl

import httpx
import openai
import pytest
import requests

from emulator.certs import ensure_certificates
from emulator.gateway import create_gateway_app
from emulator.layout import StateDir
from tests.fake_engine_process import fake_engine
from tests.gateway_harness import StaticDirectory, deployment, serve

MODEL = "deepseek-ai/DeepSeek-R1-Distill-Llama-8B"


@pytest.fixture(scope="module")
def tls_gateway(tmp_path_factory):
    state = StateDir(tmp_path_factory.mktemp("tls"))
    ensure_certificates(state)
    directory = StaticDirectory()
    with fake_engine({"VLLM_ARGS": f"--served-model-name {MODEL}"}) as engine:
        key = directory.add("r1", deployment("blue", engine.url), traffic={"blue": 100})
        with serve(create_gateway_app(directory), state.server_cert, state.server_key) as url:
            yield url, key, str(state.ca_cert)


def test_the_guides_requests_snippet_gets_a_json_chat_answer(tls_gateway):
    url, key, ca = tls_gateway
    data = {"model": MODEL, "messages": [{"role": "user", "content": "Which is better, summer or winter?"}],
            "max_tokens": 750}
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
    response = requests.post(f"{url}/endpoints/r1/score", headers=headers, json=data, verify=ca, timeout=30)
    assert response.status_code == 200
    message = response.json()["choices"][0]["message"]
    assert message["reasoning"] and message["content"]


def test_openai_client_streams_reasoning_then_answer_over_https(tls_gateway):
    url, key, ca = tls_gateway
    with httpx.Client(verify=ssl.create_default_context(cafile=ca)) as http_client:
        client = openai.OpenAI(base_url=f"{url}/endpoints/r1/v1", api_key=key, http_client=http_client)
        stream = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], stream=True,
            stream_options={"include_usage": True},
        )
        parts = []
        for chunk in stream:
            if chunk.choices:
                delta = chunk.choices[0].delta
                parts += [("reasoning", t) for t in [getattr(delta, "reasoning", None)] if t]
                parts += [("content", t) for t in [delta.content] if t]
            else:
                usage = chunk.usage
        kinds = [kind for kind, _ in parts]
        assert kinds.count("reasoning") and kinds.count("content")
        assert kinds == ["reasoning"] * kinds.count("reasoning") + ["content"] * kinds.count("content")
        assert usage.completion_tokens > len(parts)  # </think> counted, not shown
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"{url}/endpoints/r1/v1", api_key="wrong", http_client=http_client,
                          max_retries=0).models.list()


def test_the_gateway_refuses_to_be_reached_without_its_ca(tls_gateway):
    url, key, _ = tls_gateway
    with pytest.raises(httpx.ConnectError):
        httpx.post(f"{url}/endpoints/r1/score", headers={"Authorization": f"Bearer {key}"}, json={})
