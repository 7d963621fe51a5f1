"""The fake engine behaves like vLLM 0.32's OpenAI server (with the deepseek_r1 reasoning parser)
and its knobs inject the faults scenario tests rely on."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time

import httpx
import openai
import pytest

from emulator.engines.fake.generation import THINK_END, generate
from tests.fake_engine_process import REPO_ROOT, fake_engine, metric_value

CHAT = {"messages": [{"role": "user", "content": "Which is better, summer or winter?"}]}


def sse_events(response: httpx.Response) -> list[dict | str]:
    events: list[dict | str] = []
    for line in response.iter_lines():
        if line.startswith("data: "):
            data = line[len("data: "):]
            events.append(data if data == "[DONE]" else json.loads(data))
    return events


@pytest.fixture(scope="module")
def engine():
    with fake_engine({"FAKE_ENGINE_REASONING_TOKENS": "6", "FAKE_ENGINE_ANSWER_TOKENS": "4"}) as proc:
        yield proc


def test_generation_is_deterministic_and_r1_shaped():
    one = generate("hi", seed=1, reasoning_tokens=3, answer_tokens=2, max_tokens=None, ignore_eos=False)
    assert one == generate("hi", seed=1, reasoning_tokens=3, answer_tokens=2, max_tokens=None, ignore_eos=False)
    assert one != generate("hi", seed=2, reasoning_tokens=3, answer_tokens=2, max_tokens=None, ignore_eos=False)
    assert [t.part for t in one.tokens] == ["reasoning"] * 3 + ["think_end"] + ["answer"] * 2
    assert one.finish_reason == "stop"
    cut = generate("hi", seed=1, reasoning_tokens=3, answer_tokens=2, max_tokens=2, ignore_eos=False)
    assert (len(cut.tokens), cut.finish_reason, cut.text("answer")) == (2, "length", None)
    long = generate("hi", seed=1, reasoning_tokens=3, answer_tokens=2, max_tokens=50, ignore_eos=True)
    assert (len(long.tokens), long.finish_reason) == (50, "length")


def test_chat_answer_separates_reasoning_and_counts_tokens(engine):
    body = httpx.post(f"{engine.url}/v1/chat/completions", json=CHAT).json()
    again = httpx.post(f"{engine.url}/v1/chat/completions", json=CHAT).json()
    other = httpx.post(f"{engine.url}/v1/chat/completions",
                       json={"messages": [{"role": "user", "content": "something else"}]}).json()
    message = body["choices"][0]["message"]
    assert len(message["reasoning"].split()) == 6 and len(message["content"].split()) == 4
    assert "</think>" not in message["content"] + message["reasoning"]
    assert body["choices"][0]["finish_reason"] == "stop"
    # </think> is consumed by the parser but counted, as in vLLM.
    assert body["usage"]["completion_tokens"] == 11
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + 11
    assert again["choices"][0]["message"] == message
    assert other["choices"][0]["message"] != message


def test_stream_sends_reasoning_then_content_and_usage_only_on_request(engine):
    whole = httpx.post(f"{engine.url}/v1/chat/completions", json=CHAT).json()["choices"][0]["message"]
    request = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    with httpx.stream("POST", f"{engine.url}/v1/chat/completions", json=request) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = sse_events(response)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    deltas = [c["choices"][0]["delta"] for c in chunks[1:-1]]
    kinds = [next(iter(d)) for d in deltas]
    assert kinds == ["reasoning"] * 6 + ["content"] * 4
    assert "".join(d["reasoning"] for d in deltas[:6]) == whole["reasoning"]
    assert "".join(d["content"] for d in deltas[6:]) == whole["content"]
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 11

    with httpx.stream("POST", f"{engine.url}/v1/chat/completions", json={**CHAT, "stream": True}) as response:
        plain = sse_events(response)
    assert all("usage" not in e for e in plain if isinstance(e, dict))


def test_completions_honour_max_tokens_and_ignore_eos(engine):
    cut = httpx.post(f"{engine.url}/v1/completions", json={"prompt": "x", "max_tokens": 3}).json()
    assert cut["object"] == "text_completion"
    assert (cut["usage"]["completion_tokens"], cut["choices"][0]["finish_reason"]) == (3, "length")
    fixed = {"prompt": "x", "max_tokens": 40, "ignore_eos": True, "stream": True,
             "stream_options": {"include_usage": True}}
    with httpx.stream("POST", f"{engine.url}/v1/completions", json=fixed) as response:
        events = sse_events(response)
    texts = [e["choices"][0]["text"] for e in events if isinstance(e, dict) and e["choices"]]
    assert len(texts) == 40 and THINK_END in texts
    assert events[-2]["usage"]["completion_tokens"] == 40


def test_openai_client_streams_reasoning_and_answer(engine):
    client = openai.OpenAI(base_url=f"{engine.url}/v1", api_key="unused")
    models = [m.id for m in client.models.list()]
    stream = client.chat.completions.create(model=models[0], messages=CHAT["messages"], stream=True, max_tokens=100)
    reasoning, content = "", ""
    for chunk in stream:
        delta = chunk.choices[0].delta
        reasoning += getattr(delta, "reasoning", None) or ""
        content += delta.content or ""
    assert len(reasoning.split()) == 6 and len(content.split()) == 4


def test_bad_requests_get_vllm_errors_and_count(engine):
    before = engine.counter("/v1/chat/completions")
    bad = httpx.post(f"{engine.url}/v1/chat/completions", content=b"{not json")
    assert bad.status_code == 400 and bad.json()["error"]["code"] == 400
    assert httpx.post(f"{engine.url}/v1/chat/completions", json={"messages": []}).status_code == 400
    assert httpx.post(f"{engine.url}/v1/chat/completions", json={**CHAT, "max_tokens": 0}).status_code == 400
    assert httpx.get(f"{engine.url}/v1/chat/completions").status_code == 405
    assert httpx.get(f"{engine.url}/nope").status_code == 404
    assert engine.counter("/v1/chat/completions") == before + 4


def test_served_model_name_comes_from_vllm_args():
    with fake_engine({"VLLM_ARGS": "--max-num-seqs 4 --served-model-name r1-test"}) as proc:
        assert [m["id"] for m in httpx.get(f"{proc.url}/v1/models").json()["data"]] == ["r1-test"]
        assert httpx.post(f"{proc.url}/v1/chat/completions", json={**CHAT, "model": "r1-test"}).status_code == 200
        wrong = httpx.post(f"{proc.url}/v1/chat/completions", json={**CHAT, "model": "other"})
        assert wrong.status_code == 404 and wrong.json()["error"]["type"] == "NotFoundError"


def test_startup_delay_and_never_ready(wait_for):
    with fake_engine({"FAKE_ENGINE_STARTUP_DELAY_S": "0.5"}) as proc:
        assert httpx.get(f"{proc.url}/health").status_code == 503
        assert httpx.post(f"{proc.url}/v1/chat/completions", json=CHAT).status_code == 503
        wait_for(lambda: httpx.get(f"{proc.url}/health").status_code == 200, what="the engine to become ready")
        assert httpx.post(f"{proc.url}/v1/chat/completions", json=CHAT).status_code == 200
    with fake_engine({"FAKE_ENGINE_NEVER_READY": "1"}) as proc:
        time.sleep(0.2)
        assert httpx.get(f"{proc.url}/health").status_code == 503


def test_error_rate_answers_the_configured_status():
    with fake_engine({"FAKE_ENGINE_ERROR_RATE": "1", "FAKE_ENGINE_ERROR_STATUS": "503"}) as proc:
        statuses = {httpx.post(f"{proc.url}/v1/chat/completions", json=CHAT).status_code for _ in range(5)}
        assert statuses == {503}
        assert "fake_engine_injected_errors_total" in httpx.get(f"{proc.url}/metrics").text
    with fake_engine({"FAKE_ENGINE_ERROR_RATE": "0.5", "FAKE_ENGINE_SEED": "7"}) as proc:
        statuses = [httpx.post(f"{proc.url}/v1/chat/completions", json=CHAT).status_code for _ in range(40)]
        assert 5 < statuses.count(500) < 35 and statuses.count(200) == 40 - statuses.count(500)


def test_crash_after_n_requests_exits_mid_request():
    with fake_engine({"FAKE_ENGINE_CRASH_AFTER": "2"}) as proc:
        for _ in range(2):
            assert httpx.post(f"{proc.url}/v1/chat/completions", json=CHAT).status_code == 200
        with pytest.raises(httpx.TransportError):
            httpx.post(f"{proc.url}/v1/chat/completions", json=CHAT)
        assert proc.process.wait(timeout=10) == 3


def test_tokens_are_paced_and_spikes_delay_the_first_token():
    knobs = {"FAKE_ENGINE_TOKENS_PER_S": "50", "FAKE_ENGINE_REASONING_TOKENS": "4", "FAKE_ENGINE_ANSWER_TOKENS": "5",
             "FAKE_ENGINE_SPIKE_AFTER": "1", "FAKE_ENGINE_SPIKE_MS": "300"}
    with fake_engine(knobs) as proc:
        arrivals = []
        with httpx.stream("POST", f"{proc.url}/v1/chat/completions", json={**CHAT, "stream": True}) as response:
            for line in response.iter_lines():
                if line.startswith("data: {"):
                    arrivals.append(time.monotonic())
        # 9 visible tokens at 20 ms intervals after the first: at least 160 ms from first to last.
        assert arrivals[-1] - arrivals[1] >= 0.15
        httpx.post(f"{proc.url}/v1/chat/completions", json=CHAT)  # the second request: spiked
        metrics = httpx.get(f"{proc.url}/metrics").text
    assert metric_value(metrics, "vllm:time_to_first_token_seconds_sum") >= 0.3


async def test_max_num_seqs_queues_requests_in_metrics(wait_for):
    knobs = {"VLLM_ARGS": "--max-num-seqs 1", "FAKE_ENGINE_TTFT_MS": "400"}
    with fake_engine(knobs) as proc:
        async with httpx.AsyncClient(base_url=proc.url) as client:
            calls = [asyncio.create_task(client.post("/v1/chat/completions", json=CHAT)) for _ in range(2)]

            async def one_waiting() -> bool:
                return metric_value((await client.get("/metrics")).text, "vllm:num_requests_waiting") >= 1

            await wait_for(one_waiting, what="a request waiting for a sequence slot")
            metrics = (await client.get("/metrics")).text
            assert metric_value(metrics, "vllm:num_requests_running") == 1
            assert metric_value(metrics, "vllm:kv_cache_usage_perc") == 1.0
            assert [r.status_code for r in await asyncio.gather(*calls)] == [200, 200]
        assert proc.metric("vllm:num_requests_running") == 0
        assert proc.metric("vllm:request_success_total") == 2


def test_keep_alive_and_chunked_request_bodies(engine, wait_for):
    port = int(engine.url.rsplit(":", 1)[1])
    body = json.dumps(CHAT).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n"
                     + b"%x\r\n%b\r\n0\r\n\r\n" % (len(body), body)
                     + b"GET /health HTTP/1.1\r\nhost: x\r\n\r\nBROKEN\r\n\r\n")
        chunks: list[bytes] = []

        def three_answers() -> bool:
            chunks.append(sock.recv(65536))
            return b"".join(chunks).count(b"HTTP/1.1") >= 3

        wait_for(three_answers, what="three answers on one connection")
        received = b"".join(chunks)
    # Both requests answered on one connection, then the garbage gets a 400 and the connection closes.
    assert received.startswith(b"HTTP/1.1 200") and received.count(b"HTTP/1.1 200 OK") == 2
    assert b"HTTP/1.1 400 Bad Request" in received


def test_bad_knobs_exit_2_naming_each_variable():
    env = {"FAKE_ENGINE_ERROR_RATE": "2", "FAKE_ENGINE_TTFT_MS": "soon", "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run([sys.executable, "-m", "emulator.engines.fake", "--port", "1"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "FAKE_ENGINE_ERROR_RATE" in result.stderr and "FAKE_ENGINE_TTFT_MS" in result.stderr
    assert "Traceback" not in result.stderr
