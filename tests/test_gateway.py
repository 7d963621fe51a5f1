"""The scoring gateway in front of real fake-engine processes, served by uvicorn: auth, routing,
Azure's limits and codes, streaming pass-through."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter

import httpx
import pytest

from emulator.gateway import MAX_BODY_BYTES, create_gateway_app
from emulator.gateway_routing import NO_LIVE_DEPLOYMENT
from tests.fake_engine_process import fake_engine
from tests.gateway_harness import StaticDirectory, deployment, serve

CHAT = {"messages": [{"role": "user", "content": "Which is better, summer or winter?"}], "max_tokens": 64}


@pytest.fixture(scope="module")
def blue():
    with fake_engine({"FAKE_ENGINE_REASONING_TOKENS": "3", "FAKE_ENGINE_ANSWER_TOKENS": "2"}) as proc:
        yield proc


@pytest.fixture(scope="module")
def green():
    with fake_engine({"FAKE_ENGINE_REASONING_TOKENS": "3", "FAKE_ENGINE_ANSWER_TOKENS": "2"}) as proc:
        yield proc


@pytest.fixture(scope="module")
def directory():
    return StaticDirectory()


@pytest.fixture(scope="module")
def gateway(directory):
    app = create_gateway_app(directory, rng=random.Random(42))
    with serve(app) as url:
        yield url, app


def score(url: str, endpoint: str, key: str, *, path: str = "score", deployment: str | None = None,
          **kwargs) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"}
    if deployment:
        headers["azureml-model-deployment"] = deployment
    return httpx.post(f"{url}/endpoints/{endpoint}/{path}", headers=headers, json=kwargs.pop("json", CHAT),
                      timeout=30, **kwargs)


def test_every_failed_auth_is_401_and_the_engine_sees_nothing(gateway, directory):
    url, _ = gateway
    with fake_engine() as sentinel:
        key = directory.add("locked", deployment("blue", sentinel.url), traffic={"blue": 100})
        other_key = directory.add("neighbour", deployment("blue", sentinel.url), traffic={"blue": 100})
        directory.add("tokened", deployment("blue", sentinel.url), traffic={"blue": 100}, auth_mode="AMLToken")
        directory.grant("tokened", "expired-token", expires_at=time.time() - 1)
        target = f"{url}/endpoints/locked/score"
        attempts = {
            "no header": {},
            "not bearer": {"Authorization": f"Basic {key}"},
            "empty bearer": {"Authorization": "Bearer"},
            "wrong key": {"Authorization": "Bearer not-the-key"},
            "other endpoint's key": {"Authorization": f"Bearer {other_key}"},
        }
        for case, headers in attempts.items():
            answer = httpx.post(target, headers=headers, json=CHAT)
            assert answer.status_code == 401, case
            assert answer.json()["error"]["code"] == "Unauthorized"
        expired = httpx.post(f"{url}/endpoints/tokened/score", headers={"Authorization": "Bearer expired-token"},
                             json=CHAT)
        assert expired.status_code == 401
        assert sentinel.counter() == 0

        assert score(url, "locked", key).status_code == 200
        directory.revoke("locked", key)  # what regenerating the primary key does
        directory.grant("locked", "key-locked-new")
        assert score(url, "locked", key).status_code == 401
        assert sentinel.counter() == 1
        assert score(url, "locked", "key-locked-new").status_code == 200
        assert sentinel.counter() == 2


def test_unknown_endpoint_and_non_scoring_paths_are_404(gateway):
    url, _ = gateway
    assert score(url, "nowhere", "k").status_code == 404
    assert httpx.get(f"{url}/score").status_code == 404


def test_score_reaches_chat_completions_and_paths_pass_through(gateway, directory, blue):
    url, _ = gateway
    key = directory.add("paths", deployment("blue", blue.url), traffic={"blue": 100})
    answer = score(url, "paths", key)
    assert answer.status_code == 200 and answer.headers["azureml-model-deployment"] == "blue"
    message = answer.json()["choices"][0]["message"]
    assert message["reasoning"] and message["content"]
    completion = score(url, "paths", key, path="v1/completions", json={"prompt": "hi", "max_tokens": 4})
    assert completion.json()["object"] == "text_completion"
    models = httpx.get(f"{url}/endpoints/paths/v1/models", headers={"Authorization": f"Bearer {key}"})
    assert models.json()["data"][0]["id"]


def test_header_targets_a_deployment_at_zero_percent(gateway, directory, blue, green):
    url, _ = gateway
    key = directory.add("targeted", deployment("blue", blue.url), deployment("green", green.url),
                        traffic={"blue": 100, "green": 0})
    before = green.counter()
    for _ in range(5):
        answer = score(url, "targeted", key, deployment="green")
        assert answer.status_code == 200 and answer.headers["azureml-model-deployment"] == "green"
    assert green.counter() == before + 5
    unknown = score(url, "targeted", key, deployment="purple")
    assert unknown.status_code == 404 and "purple" in unknown.json()["error"]["message"]


def test_no_live_deployment_is_azures_404_but_the_header_still_works(gateway, directory, blue):
    url, _ = gateway
    key = directory.add("dark", deployment("blue", blue.url), traffic={"blue": 0})
    answer = score(url, "dark", key)
    assert answer.status_code == 404 and answer.json()["error"]["message"] == NO_LIVE_DEPLOYMENT
    assert score(url, "dark", key, deployment="blue").status_code == 200


def test_a_70_30_split_lands_within_a_few_percent(directory, blue, green):
    key = directory.add("split", deployment("blue", blue.url), deployment("green", green.url),
                        traffic={"blue": 70, "green": 30})
    before = {"blue": blue.counter(), "green": green.counter()}
    # A gateway of its own with a seeded draw: the same 400 draws whatever other tests ran.
    with serve(create_gateway_app(directory, rng=random.Random(7))) as url, \
            httpx.Client(headers={"Authorization": f"Bearer {key}"}) as client:
        served = Counter(client.post(f"{url}/endpoints/split/score", json=CHAT).headers["azureml-model-deployment"]
                         for _ in range(400))
    assert 0.64 <= served["blue"] / 400 <= 0.76
    # The response header tells the truth: each engine saw exactly the requests it is credited with.
    assert blue.counter() - before["blue"] == served["blue"]
    assert green.counter() - before["green"] == served["green"]


def test_mirror_copies_traffic_without_changing_who_answers(gateway, directory, blue, green, wait_for):
    url, app = gateway
    key = directory.add("mirrored", deployment("blue", blue.url), deployment("green", green.url),
                        traffic={"blue": 100}, mirror={"green": 50})
    before = green.counter()
    with httpx.Client(headers={"Authorization": f"Bearer {key}"}) as client:
        served = {client.post(f"{url}/endpoints/mirrored/score", json=CHAT).headers["azureml-model-deployment"]
                  for _ in range(100)}
        wait_for(lambda: not app.pending_mirrors, what="the mirrored copies to finish")
        mirrored = green.counter() - before
        targeted = client.post(f"{url}/endpoints/mirrored/score", json=CHAT,
                               headers={"azureml-model-deployment": "blue"})
    assert served == {"blue"}
    assert 30 <= mirrored <= 70
    assert targeted.status_code == 200 and app.pending_mirrors == 0 and green.counter() - before == mirrored


def test_a_failing_mirror_never_reaches_the_client(gateway, directory, blue, wait_for):
    url, app = gateway
    with fake_engine({"FAKE_ENGINE_ERROR_RATE": "1"}) as broken:
        key = directory.add("badmirror", deployment("blue", blue.url), deployment("green", broken.url),
                            traffic={"blue": 100}, mirror={"green": 50})
        statuses = {score(url, "badmirror", key).status_code for _ in range(20)}
        wait_for(lambda: not app.pending_mirrors, what="the mirrored copies to finish")
        assert statuses == {200} and broken.counter() > 0


async def test_more_than_twice_the_concurrency_is_429(gateway, directory):
    url, _ = gateway
    with fake_engine({"FAKE_ENGINE_TTFT_MS": "1500"}) as slow:
        key = directory.add("busy", deployment("blue", slow.url, mcr=1, count=1), traffic={"blue": 100})
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=30) as client:
            answers = await asyncio.gather(*(client.post(f"{url}/endpoints/busy/score", json=CHAT) for _ in range(5)))
        statuses = Counter(a.status_code for a in answers)
        assert statuses == {200: 2, 429: 3}  # 2 x max_concurrent_requests_per_instance(1) x instances(1)
        assert slow.counter() == 2


def test_request_timeout_is_408_before_the_answer_starts(gateway, directory):
    url, _ = gateway
    with fake_engine({"FAKE_ENGINE_TTFT_MS": "2000"}) as slow:
        key = directory.add("slowpoke", deployment("blue", slow.url, timeout_ms=300), traffic={"blue": 100})
        answer = score(url, "slowpoke", key)
    assert answer.status_code == 408 and "request_timeout_ms" in answer.json()["error"]["message"]
    assert answer.headers["x-request-id"]


def test_request_timeout_mid_stream_sends_an_error_event_and_cuts_the_stream(gateway, directory):
    url, _ = gateway
    knobs = {"FAKE_ENGINE_TOKENS_PER_S": "20", "FAKE_ENGINE_REASONING_TOKENS": "30"}
    with fake_engine(knobs) as slow:
        key = directory.add("longstream", deployment("blue", slow.url, timeout_ms=400), traffic={"blue": 100})
        events: list[str] = []
        with pytest.raises(httpx.RemoteProtocolError):
            with httpx.stream("POST", f"{url}/endpoints/longstream/v1/chat/completions",
                              headers={"Authorization": f"Bearer {key}"}, json={**CHAT, "stream": True}) as r:
                assert r.status_code == 200
                events.extend(line for line in r.iter_lines() if line.startswith("data: "))
    assert len(events) >= 3 and "[DONE]" not in events[-1]
    assert json.loads(events[-1][len("data: "):])["error"]["code"] == 408


def test_engine_errors_are_424_with_the_model_status(gateway, directory):
    url, _ = gateway
    with fake_engine({"FAKE_ENGINE_ERROR_RATE": "1", "FAKE_ENGINE_ERROR_STATUS": "503"}) as broken:
        key = directory.add("faulty", deployment("blue", broken.url), traffic={"blue": 100})
        answer = score(url, "faulty", key)
    assert answer.status_code == 424
    assert answer.headers["ms-azureml-model-error-statuscode"] == "503"
    assert answer.headers["azureml-model-deployment"] == "blue"
    assert "injected failure" in answer.json()["error"]["message"]  # the engine's own body


def test_oversized_bodies_are_413_and_never_forwarded(gateway, directory):
    url, _ = gateway
    with fake_engine() as engine:
        key = directory.add("bulky", deployment("blue", engine.url), traffic={"blue": 100})
        big = {"messages": [{"role": "user", "content": "x" * MAX_BODY_BYTES}]}
        assert score(url, "bulky", key, json=big).status_code == 413
        payload = json.dumps(big).encode()
        chunked = httpx.post(f"{url}/endpoints/bulky/score", headers={"Authorization": f"Bearer {key}"},
                             content=iter([payload[i:i + 65536] for i in range(0, len(payload), 65536)]))
        assert chunked.status_code == 413
        assert engine.counter() == 0


def test_only_ready_instances_get_traffic_and_a_dead_one_is_an_error(gateway, directory):
    url, _ = gateway
    key = directory.add("cold", deployment("blue", count=1), traffic={"blue": 100})
    assert score(url, "cold", key).status_code == 503
    with fake_engine({"FAKE_ENGINE_CRASH_AFTER": "0"}) as doomed:
        directory.add("doomed", deployment("blue", doomed.url), traffic={"blue": 100}, key="k-doomed")
        answer = score(url, "doomed", "k-doomed")
        assert answer.status_code == 502 and doomed.process.wait(timeout=10) == 3
        assert score(url, "doomed", "k-doomed").status_code == 502  # nothing listens any more


def test_streaming_arrives_chunk_by_chunk(gateway, directory):
    url, _ = gateway
    knobs = {"FAKE_ENGINE_TOKENS_PER_S": "20", "FAKE_ENGINE_REASONING_TOKENS": "4", "FAKE_ENGINE_ANSWER_TOKENS": "4"}
    with fake_engine(knobs) as paced:
        key = directory.add("paced", deployment("blue", paced.url), traffic={"blue": 100})
        arrivals, kinds = [], []
        request = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
        with httpx.stream("POST", f"{url}/endpoints/paced/v1/chat/completions",
                          headers={"Authorization": f"Bearer {key}"}, json=request) as response:
            assert response.headers["azureml-model-deployment"] == "blue"
            for line in response.iter_lines():
                if line.startswith("data: {"):
                    arrivals.append(time.monotonic())
                    choices = json.loads(line[6:])["choices"]
                    kinds.append(next(iter(choices[0]["delta"]), "") if choices else "usage")
    assert kinds[1:] == ["reasoning"] * 4 + ["content"] * 4 + ["usage"]
    gaps = sorted(b - a for a, b in zip(arrivals[1:9], arrivals[2:9]))
    # Tokens are 50 ms apart at the engine; buffering anywhere would collapse these gaps to ~0
    # (the median, not the minimum: a busy machine may deliver two chunks in one read now and then).
    assert gaps[len(gaps) // 2] > 0.02 and arrivals[8] - arrivals[1] >= 0.3


def test_a_restarted_instance_on_the_same_port_is_reached_afresh(gateway, directory):
    url, _ = gateway
    with fake_engine() as first:
        port = int(first.url.rsplit(":", 1)[1])
        key = directory.add("reborn", deployment("blue", first.url), traffic={"blue": 100})
        assert score(url, "reborn", key).status_code == 200  # leaves a pooled keep-alive connection
    with fake_engine(port=port) as second:
        assert [score(url, "reborn", key).status_code for _ in range(3)] == [200] * 3
        assert second.counter() == 3


def test_a_client_that_leaves_mid_stream_frees_its_slot(gateway, directory, wait_for):
    url, app = gateway
    knobs = {"FAKE_ENGINE_TOKENS_PER_S": "10", "FAKE_ENGINE_REASONING_TOKENS": "50"}
    with fake_engine(knobs) as slow:
        key = directory.add("walkaway", deployment("blue", slow.url, mcr=1, count=1), traffic={"blue": 100})
        with httpx.stream("POST", f"{url}/endpoints/walkaway/v1/chat/completions",
                          headers={"Authorization": f"Bearer {key}"}, json={**CHAT, "stream": True}) as response:
            next(response.iter_lines())
            # counted as the gateway's handler runs on, so polled: on a loaded machine the first line can come first
            wait_for(lambda: app.in_flight("walkaway", "blue") == 1, timeout=5, what="the request counted in flight")
        # The answer would take 5 s; the gateway lets go of the engine at its next token instead.
        wait_for(lambda: not (app.in_flight("walkaway", "blue") or slow.metric("vllm:num_requests_running")),
                 timeout=4, what="the gateway and the engine to let go of the request")
        assert app.in_flight("walkaway", "blue") == 0 and slow.metric("vllm:num_requests_running") == 0


def test_an_instance_dying_mid_stream_ends_the_stream_with_an_error(gateway, directory):
    url, app = gateway
    knobs = {"FAKE_ENGINE_TOKENS_PER_S": "10", "FAKE_ENGINE_REASONING_TOKENS": "50"}
    with fake_engine(knobs) as doomed:
        key = directory.add("midstream", deployment("blue", doomed.url), traffic={"blue": 100})
        events: list[str] = []
        with pytest.raises(httpx.RemoteProtocolError):
            with httpx.stream("POST", f"{url}/endpoints/midstream/v1/chat/completions",
                              headers={"Authorization": f"Bearer {key}"}, json={**CHAT, "stream": True}) as r:
                for line in r.iter_lines():
                    if line.startswith("data: "):
                        events.append(line)
                        if len(events) == 2:
                            doomed.process.kill()
    assert json.loads(events[-1][len("data: "):])["error"]["code"] == 502
    assert app.in_flight("midstream", "blue") == 0
