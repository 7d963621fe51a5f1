"""The shipped prompt set and the request bodies a run sends."""

import json
from collections import Counter

from tasks.loadtest.spec import PROMPTS_FILE, LoadSpec, prompt_for, request_body, shipped_prompts
from tasks.loadtest.prompts.generate import generate, render


def test_committed_prompt_set_is_what_the_generator_writes():
    assert PROMPTS_FILE.read_text() == render(generate())


def test_prompt_set_is_a_few_hundred_distinct_prompts_across_categories():
    rows = [json.loads(line) for line in PROMPTS_FILE.read_text().splitlines()]
    assert len(rows) == len(shipped_prompts()) == 320
    assert len({r["prompt"] for r in rows}) == 320 and len({r["id"] for r in rows}) == 320
    assert set(Counter(r["category"] for r in rows).values()) == {40}


def test_bodies_cycle_the_shipped_set_from_the_seed_and_request_usage():
    spec = LoadSpec(requests=1, seed=3, max_tokens=7)
    body = json.loads(request_body(spec, 0, "m"))
    assert body == {"max_tokens": 7, "stream": True, "model": "m", "stream_options": {"include_usage": True},
                    "messages": [{"role": "user", "content": shipped_prompts()[3]}]}
    assert prompt_for(spec, 320) == prompt_for(spec, 0)


def test_non_streamed_body_without_a_model_omits_both():
    body = json.loads(request_body(LoadSpec(requests=1, stream=False, api="completions", temperature=0), 0, None))
    assert body == {"max_tokens": 256, "stream": False, "prompt": shipped_prompts()[0], "temperature": 0}


def test_synthetic_prompts_have_the_word_count_and_differ_per_request_and_seed():
    spec = LoadSpec(requests=1, prompt_tokens=16)
    a, b = prompt_for(spec, 0), prompt_for(spec, 1)
    assert len(a.split()) == len(b.split()) == 16 and a != b
    assert prompt_for(spec.model_copy(update={"seed": 1}), 0) != a
    assert prompt_for(spec, 0) == a
