"""What a load run sends and how hard: the validated run description and the request bodies it yields.

Prompts come from the shipped set (``tasks/prompts/prompts.jsonl``, varied categories) or are
synthetic with a target length. Synthetic prompts are random common words, seeded per request so
no two share a prefix (a prefix-cache hit would flatter TTFT); their true length is whatever the
server's ``usage.prompt_tokens`` says, and the report shows it.
"""

from __future__ import annotations

import json
import random
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, model_validator

from tasks.loadtest.schedule import Arrival

PROMPTS_FILE = Path(__file__).with_name("prompts") / "prompts.jsonl"
WORDS = (
    "time year people way day man thing woman life child world school state family student group country "
    "problem hand part place case week company system program question work government number night point "
    "home water room mother area money story fact month lot right study book eye job word business issue "
    "side kind head house service friend father power hour game line end member law car city community name"
).split()


class LoadSpec(BaseModel):
    """One load run. Closed loop when ``rate`` is None (``concurrency`` workers), else open loop."""

    api: Literal["chat", "completions"] = "chat"
    concurrency: int = Field(1, ge=1, le=4096)  # closed-loop workers
    rate: float | None = Field(None, gt=0)  # open loop: requests per second
    max_concurrency: int | None = Field(None, ge=1)  # open loop cap; waiting for it counts as send lag
    arrival: Arrival = "poisson"
    burstiness: float = Field(1.0, gt=0)
    requests: int | None = Field(None, ge=1)  # measured requests (warm-up not included)
    duration_s: float | None = Field(None, gt=0)
    warmup: int = Field(0, ge=0)  # first requests sent, recorded and excluded from metrics
    stream: bool = True
    max_tokens: int = Field(256, ge=1)
    ignore_eos: bool = False  # vLLM extension: fixed output length = max_tokens
    temperature: float | None = Field(None, ge=0)
    prompt_tokens: int | None = Field(None, ge=1)  # synthetic prompts of about this many tokens
    model: str | None = None  # None: ask {base}/v1/models, or send none if that fails
    seed: int = 0
    timeout_s: float = Field(180.0, gt=0)  # per request; Azure's own maximum is 180 s

    @model_validator(mode="after")
    def _bounded(self) -> LoadSpec:
        if self.requests is None and self.duration_s is None:
            raise ValueError("a run needs a request count and/or a duration")
        if self.rate is None and self.max_concurrency is not None:
            raise ValueError("max_concurrency caps an open-loop run: give a rate too")
        if self.rate is not None and "concurrency" in self.model_fields_set:
            raise ValueError("concurrency is for closed loop; cap an open-loop run with max_concurrency")
        return self

    @property
    def open_loop(self) -> bool:
        return self.rate is not None

    @property
    def total_requests(self) -> int | None:
        return None if self.requests is None else self.requests + self.warmup


@lru_cache(maxsize=1)
def shipped_prompts() -> tuple[str, ...]:
    return tuple(json.loads(line)["prompt"] for line in PROMPTS_FILE.read_text().splitlines() if line.strip())


def synthetic_prompt(tokens: int, seed: int, index: int) -> str:
    """About ``tokens`` tokens of common words (one token each in Llama-style vocabularies)."""
    r = random.Random(f"{seed}:{index}")
    return " ".join(r.choice(WORDS) for _ in range(tokens))


def prompt_for(spec: LoadSpec, index: int) -> str:
    if spec.prompt_tokens is not None:
        return synthetic_prompt(spec.prompt_tokens, spec.seed, index)
    prompts = shipped_prompts()
    return prompts[(index + spec.seed) % len(prompts)]


def request_body(spec: LoadSpec, index: int, model: str | None) -> bytes:
    """The JSON body of request ``index``: usage requested in-stream so tokens are server-counted."""
    body: dict = {"max_tokens": spec.max_tokens, "stream": spec.stream}
    if model:
        body["model"] = model
    prompt = prompt_for(spec, index)
    if spec.api == "chat":
        body["messages"] = [{"role": "user", "content": prompt}]
    else:
        body["prompt"] = prompt
    if spec.stream:
        body["stream_options"] = {"include_usage": True}
    if spec.ignore_eos:
        body["ignore_eos"] = True
    if spec.temperature is not None:
        body["temperature"] = spec.temperature
    return json.dumps(body).encode()


def endpoint_path(spec: LoadSpec) -> str:
    return "/v1/chat/completions" if spec.api == "chat" else "/v1/completions"
