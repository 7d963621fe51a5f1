"""The generator against an in-process SSE server: every metric equals its hand-computed value.

With a ``StepClock`` the server's script sets the time of each write and the client's timestamps
are exact; with the real clock the tests compare against times the server recorded, never against
fixed wall-clock numbers.
"""

import asyncio
import itertools
import json

import pytest
from pydantic import SecretStr

from tasks.loadtest.client import BackgroundLoad, Destination, run_load
from tasks.loadtest.metrics import summarise
from tasks.loadtest.spec import LoadSpec
from tasks.settings import Slo
from tasks.loadtest.slo import evaluate_by_deployment
from tests.loadtest_support import Script, SseServer, StepClock, Write, chat_chunk, usage_chunk

R1 = Script(writes=[
    Write(0.250, [chat_chunk(content="")]),  # role chunk, sent with the first token (as vLLM does)
    Write(0.000, [chat_chunk(reasoning="Two")]),
    Write(0.040, [chat_chunk(reasoning=" plus two")]),
    Write(0.060, [chat_chunk(content="Four")]),
    Write(0.100, [chat_chunk(content=".", finish="stop")]),
    Write(0.005, [usage_chunk(17, 6), "[DONE]"]),
], headers={"azureml-model-deployment": "green"}, end_delay_s=0.003)


def stepped(script=R1):
    clock = StepClock()
    return SseServer(lambda i, body: script, clock), clock


async def test_each_metric_equals_its_hand_computed_value():
    server, clock = stepped()
    with server:
        run = await run_load(Destination(server.base_url), LoadSpec(requests=2, model="m"), clock=clock)
    first, second = run.records
    assert first.ok and first.status == 200 and first.deployment == "green"
    assert first.ttft_s == pytest.approx(0.250)
    assert first.ttfa_s == pytest.approx(0.350)
    assert first.tpot_s == pytest.approx((0.450 - 0.250) / (6 - 1))
    assert first.e2e_s == pytest.approx(0.458)
    assert first.chunk_gaps_s == pytest.approx([0.040, 0.060, 0.100])
    assert (first.reasoning_chunks, first.answer_chunks, first.reasoning_tokens, first.answer_tokens) == (2, 2, 2, 4)
    assert (first.prompt_tokens, first.completion_tokens, first.finish_reason) == (17, 6, "stop")
    # closed loop: the second request goes out the moment the first ends
    assert second.intended_s == second.sent_s == pytest.approx(first.end_s)
    assert run.elapsed_s == pytest.approx(2 * 0.458)


async def test_request_carries_model_usage_option_auth_and_deployment_header():
    tokens = (f"tok-{i}" for i in itertools.count(1))
    server, clock = stepped()
    with server:
        dest = Destination(server.base_url, auth=lambda: SecretStr(next(tokens)), deployment="blue")
        run = await run_load(dest, LoadSpec(requests=2, max_tokens=33, ignore_eos=True, seed=4), clock=clock)
    assert run.model == "tiny-r1"  # discovered from /v1/models
    first, second = (s.body for s in server.served)
    assert first["model"] == "tiny-r1" and first["max_tokens"] == 33 and first["ignore_eos"] is True
    assert first["stream"] is True and first["stream_options"] == {"include_usage": True}
    assert first["messages"][0]["role"] == "user" and first["messages"] != second["messages"]
    # tok-1 went to /v1/models; each request asked the provider again
    assert [s.headers["authorization"] for s in server.served] == ["Bearer tok-2", "Bearer tok-3"]
    assert {s.headers["azureml-model-deployment"] for s in server.served} == {"blue"}
    assert "tok-" not in repr(dest)


async def test_completions_api_with_synthetic_prompts():
    server, clock = stepped()
    with server:
        await run_load(Destination(server.base_url), LoadSpec(api="completions", requests=2, prompt_tokens=12, model="m"),
                       clock=clock)
    bodies = [s.body for s in server.served]
    assert all(len(b["prompt"].split()) == 12 and "messages" not in b for b in bodies)
    assert bodies[0]["prompt"] != bodies[1]["prompt"]  # no shared prefix for the cache to reuse


async def test_whole_answer_flush_is_detected_and_warned():
    flush = Script(writes=[Write(0.3, [chat_chunk(reasoning="a"), chat_chunk(reasoning="b"), chat_chunk(content="c"),
                                       chat_chunk(content="d"), usage_chunk(5, 4), "[DONE]"])])
    server, clock = stepped(flush)
    with server:
        run = await run_load(Destination(server.base_url), LoadSpec(requests=3, model="m"), clock=clock)
    rec = run.records[0]
    assert rec.ttft_s == rec.ttfa_s == pytest.approx(0.3) and rec.chunk_gaps_s == [0.0, 0.0, 0.0]
    assert rec.tpot_s == 0.0
    warnings = summarise(run.records)["warnings"]
    assert any("3 of 3 answers arrived whole" in w and "per-chunk gaps are meaningless" in w for w in warnings)


async def test_multi_token_chunks_use_server_tokens_and_warn():
    multi = Script(writes=[Write(0.1, [chat_chunk(content="ab")]), Write(0.1, [chat_chunk(content="cd")]),
                           Write(0.1, [chat_chunk(content="ef")]), Write(0.0, [usage_chunk(3, 12), "[DONE]"])])
    server, clock = stepped(multi)
    with server:
        run = await run_load(Destination(server.base_url), LoadSpec(requests=2, model="m"), clock=clock)
    assert run.records[0].tpot_s == pytest.approx(0.2 / 11)  # 12 server tokens, not 3 chunks
    assert any("multi-token chunks (4.00 server tokens per event)" in w
               for w in summarise(run.records)["warnings"])


async def test_http_errors_and_refused_connections_get_an_error_class():
    server = SseServer(lambda i, body: Script(status=429, body=b'{"error": "too many requests"}'))
    with server:
        run = await run_load(Destination(server.base_url), LoadSpec(requests=2, model="m"))
    assert [(r.error, r.status) for r in run.records] == [("http_429", 429)] * 2
    assert "too many requests" in run.records[0].error_detail
    echo = SseServer(lambda i, body: Script(status=401, body=b"bad key: " + b"k-echoed-9"))
    with echo:
        run = await run_load(Destination(echo.base_url, auth=SecretStr("k-echoed-9")), LoadSpec(requests=1, model="m"))
    assert run.records[0].error_detail == "bad key: ***"
    with SseServer(lambda i, body: R1) as gone:
        url = gone.base_url
    run = await run_load(Destination(url), LoadSpec(requests=1, model="m", timeout_s=5))
    assert run.records[0].error == "connect_error"


async def test_warmup_requests_are_sent_but_not_measured():
    server, clock = stepped()
    with server:
        run = await run_load(Destination(server.base_url), LoadSpec(requests=3, warmup=2, model="m"), clock=clock)
    assert len(server.served) == 5 and [r.warmup for r in run.records] == [True, True, False, False, False]
    assert summarise(run.records)["requests_total"] == 3


async def test_duration_bound_stops_sending_at_the_deadline():
    server, clock = stepped()
    with server:  # each request takes 0.458 s of (virtual) time: sends at 0, 0.458, 0.916; not at 1.374
        run = await run_load(Destination(server.base_url), LoadSpec(duration_s=1.0, model="m"), clock=clock)
    assert [round(r.sent_s, 3) for r in run.records] == [0.0, 0.458, 0.916]


async def test_closed_loop_keeps_exactly_concurrency_requests_in_flight():
    in_flight, peak = 0, 0

    def script(i, body):
        return Script(writes=[Write(0.05, [chat_chunk(content="x")]), Write(0.0, [usage_chunk(1, 1), "[DONE]"])])

    server = SseServer(script)
    with server:
        run = await run_load(Destination(server.base_url), LoadSpec(concurrency=4, requests=16, model="m"))
    spans = sorted((s.received_s, s.closed_s) for s in server.served)
    for start, _ in spans:  # the server's own view: how many were open when each arrived
        in_flight = sum(1 for s, e in spans if s <= start < e)
        peak = max(peak, in_flight)
    assert len(run.records) == 16 and all(r.ok for r in run.records)
    assert peak == 4
    assert summarise(run.records)["achieved_concurrency"]["max"] == 4


async def test_open_loop_follows_the_schedule_and_measures_from_intended_time():
    server = SseServer(lambda i, body: Script(writes=[Write(0.05, [chat_chunk(content="x")]),
                                                      Write(0.0, [usage_chunk(1, 1), "[DONE]"])]))
    t0 = []
    spec = LoadSpec(rate=100.0, arrival="constant", max_concurrency=1, requests=8, model="m")
    with server:
        run = await run_load(Destination(server.base_url), spec, on_start=t0.append)
    records = run.records
    assert [r.intended_s for r in records] == pytest.approx([i / 100 for i in range(8)])
    closed = [s.closed_s - t0[0] for s in server.served]
    for prev_closed, rec in zip(closed, records[1:]):
        # cap 1 and 50 ms answers: each request had to wait for the previous one, and that wait is lag
        assert rec.sent_s >= prev_closed
        assert rec.send_lag_s >= prev_closed - rec.intended_s > 0
        assert rec.e2e_from_intended_s == pytest.approx(rec.e2e_s + rec.send_lag_s)
    s = summarise(records, open_loop=True, target_rate=100.0)
    assert s["achieved_rate"] < 0.95 * s["scheduled_rate"]
    assert any("fell short of the schedule" in w for w in s["warnings"])


async def test_open_loop_schedule_is_reproducible_from_the_seed():
    script = Script(writes=[Write(0.0, [chat_chunk(content="x"), usage_chunk(1, 1), "[DONE]"])])
    spec = LoadSpec(rate=200.0, arrival="gamma", burstiness=0.5, requests=20, seed=11, model="m")
    with SseServer(lambda i, body: script) as server:
        a = await run_load(Destination(server.base_url), spec)
        b = await run_load(Destination(server.base_url), spec)
    assert [r.intended_s for r in a.records] == [r.intended_s for r in b.records]
    assert all(r.sent_s >= r.intended_s for r in a.records)


async def test_stop_event_ends_an_unbounded_looking_run_and_keeps_in_flight_requests():
    server = SseServer(lambda i, body: R1)
    stop = asyncio.Event()
    seen = []

    def on_record(rec):
        seen.append(rec)
        if len(seen) == 3:
            stop.set()

    with server:
        run = await run_load(Destination(server.base_url), LoadSpec(concurrency=2, duration_s=3600, model="m"),
                             stop=stop, on_record=on_record)
    assert 3 <= len(run.records) <= 4 and all(r.ok for r in run.records)


def test_background_load_gives_live_records_per_deployment_in_a_window(wait_for):
    colours = ["blue", "green"]

    def script(i, body):
        return Script(writes=[Write(0.005, [chat_chunk(content="x")]), Write(0.0, [usage_chunk(1, 2), "[DONE]"])],
                      headers={"azureml-model-deployment": colours[i % 2]})

    with SseServer(script) as server:
        bg = BackgroundLoad(Destination(server.base_url, auth=SecretStr("k-live")),
                            LoadSpec(rate=200.0, max_concurrency=4, duration_s=600, model="m"))
        with bg:
            start = bg.now()
            wait_for(lambda: len(bg.records()) >= 40, what="40 records")
            end = bg.now()
            verdicts = evaluate_by_deployment(bg.records(), Slo(min_requests=10), window=(start, end))
        run = bg.stop()
    assert set(verdicts) == {"blue", "green"} and all(v.status == "pass" for v in verdicts.values())
    assert len(run.records) >= 40 and all(r.ok for r in run.records)
    assert all(s.headers["authorization"] == "Bearer k-live" for s in server.served)
    assert "k-live" not in json.dumps([r.to_json() for r in run.records])


async def test_a_failing_token_provider_is_an_auth_error_record_without_its_message():
    def provider():
        raise RuntimeError("refresh failed for secret-token-xyz")

    server, clock = stepped()
    with server:
        run = await run_load(Destination(server.base_url, auth=provider), LoadSpec(requests=2, model="m"), clock=clock)
    assert [(r.error, r.error_detail) for r in run.records] == [("auth_error", "RuntimeError")] * 2
    assert server.served == []


async def test_https_with_the_emulators_ca_bundle_and_refused_without_it(tmp_path):
    from emulator.certs import ensure_certificates
    from emulator.layout import StateDir

    state = StateDir(tmp_path)
    ensure_certificates(state)
    tls = (str(state.server_cert), str(state.server_key))
    with SseServer(lambda i, body: R1, tls=tls) as server:
        assert server.base_url.startswith("https://")
        trusted = await run_load(Destination(server.base_url, verify=state.ca_cert), LoadSpec(requests=1, model="m"))
        untrusted = await run_load(Destination(server.base_url), LoadSpec(requests=1, model="m"))
    assert trusted.records[0].ok
    assert untrusted.records[0].error == "connect_error" and len(server.served) == 1


def test_settle_waits_for_requests_still_in_flight_so_slow_ones_are_judged(wait_for):
    """A window judged right at its end misses its slowest requests; after settle() none is missing."""

    def script(i, body):
        slow = i % 4 == 0  # every fourth request takes 0.4 s
        return Script(writes=[Write(0.4 if slow else 0.005, [chat_chunk(content="x")]),
                              Write(0.0, [usage_chunk(1, 2), "[DONE]"])])

    with SseServer(script) as server:
        bg = BackgroundLoad(Destination(server.base_url), LoadSpec(rate=100.0, max_concurrency=16, duration_s=600,
                                                              model="m"))
        with bg:
            start = bg.now()
            wait_for(lambda: len(bg.records()) >= 30, what="30 records")
            end = bg.now()
            pending = bg.settle(end, timeout_s=30)
            judged = [r for r in bg.records() if start <= r.sent_s < end]
        run = bg.stop()
    sent_in_window = [r for r in run.records if start <= r.sent_s < end]
    assert pending == 0
    assert {r.index for r in judged} == {r.index for r in sent_in_window}
    assert any(r.ttft_s > 0.3 for r in judged)  # the slow ones are in the judged set
