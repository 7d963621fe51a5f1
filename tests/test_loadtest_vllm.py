"""The generator against the real vLLM server (the emulator's engine): its stream parses as we assume."""

import pytest

from tasks.loadtest.run import LoadSpec, Destination, run_load, summarise
from tests.loadtest_support import vllm_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def vllm_base():
    with vllm_server() as base:
        yield base


async def test_chat_with_the_reasoning_parser_splits_reasoning_and_counts_tokens(vllm_base):
    run = await run_load(Destination(vllm_base), LoadSpec(concurrency=2, requests=6, max_tokens=160, seed=1))
    assert run.model == "tiny-r1" and all(r.ok for r in run.records)
    assert all(r.reasoning_chunks > 0 for r in run.records)  # delta.reasoning (vLLM 0.32)
    assert any(r.answer_chunks > 0 and r.first_answer_s > r.first_token_s for r in run.records)
    assert all(r.completion_tokens >= r.text_chunks and r.tpot_s > 0 for r in run.records)
    assert_bundling_is_reported(run.records)


async def test_completions_with_ignore_eos_count_every_token(vllm_base):
    spec = LoadSpec(api="completions", rate=8.0, requests=8, prompt_tokens=16, max_tokens=24, ignore_eos=True)
    run = await run_load(Destination(vllm_base), spec)
    # ignore_eos: exactly 24 tokens, some after the model's own end decode to no text
    assert all(r.ok and r.completion_tokens == 24 and 0 < r.text_chunks <= r.choice_events <= 24
               for r in run.records), [(r.error, r.completion_tokens, r.choice_events) for r in run.records]
    s = summarise(run.records, open_loop=True, target_rate=8.0)
    assert s["prompt_tokens"]["n"] == 8 and s["output_tokens"]["mean"] == 24
    assert_bundling_is_reported(run.records)


def assert_bundling_is_reported(records):
    """vLLM v1 merges tokens into one event when its API loop falls behind (a busy CPU): we must say so."""
    warnings = summarise(records)["warnings"]
    bundled = [r for r in records if r.multi_token_events]
    assert any("multi-token chunks" in w for w in warnings) == bool(bundled), warnings
    assert not any("usage" in w for w in warnings), warnings
