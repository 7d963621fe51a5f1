"""The fake engine's HTTP surface: vLLM's OpenAI server, as far as this project uses it.

Routes: ``/health``, ``/version``, ``/metrics``, ``/v1/models``, ``/v1/chat/completions``,
``/v1/completions`` (streaming and not). Response shapes follow vLLM 0.32 with
``--reasoning-parser deepseek_r1``: ``message.reasoning`` / ``delta.reasoning``, then content.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from emulator.engines.fake.generation import Completion, count_prompt_tokens, generate
from emulator.engines.fake.http11 import Request, Response
from emulator.engines.fake.knobs import Knobs
from emulator.engines.fake.metrics import Metrics

DEFAULT_MODEL = "deepseek-ai/DeepSeek-R1-Distill-Llama-8B"
VERSION = "0.32.0+fake"
KNOWN_PATHS = {"/health", "/version", "/metrics", "/v1/models", "/v1/chat/completions", "/v1/completions"}

Kind = Literal["chat", "text"]


class InvalidRequest(Exception):
    """A request vLLM would refuse; answered with vLLM's error shape."""

    def __init__(self, status: int, message: str, error_type: str = "BadRequestError", param: str | None = None):
        super().__init__(message)
        self.status, self.error_type, self.param = status, error_type, param


def error_body(status: int, message: str, error_type: str, param: str | None = None) -> bytes:
    return json.dumps({"error": {"message": message, "type": error_type, "param": param, "code": status}}).encode()


@dataclass(frozen=True)
class GenerationRequest:
    kind: Kind
    model: str
    prompt: str
    max_tokens: int | None
    stream: bool
    include_usage: bool
    ignore_eos: bool
    seed: int


def _prompt_text(kind: Kind, body: dict[str, Any]) -> str:
    if kind == "chat":
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise InvalidRequest(400, "'messages' must be a non-empty list", param="messages")
        texts = []
        for message in messages:
            content = message.get("content") if isinstance(message, dict) else None
            if isinstance(content, list):  # content parts
                content = " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
            if not isinstance(content, str):
                raise InvalidRequest(400, "each message needs a 'content' string", param="messages")
            texts.append(f"{message.get('role', 'user')}: {content}")
        return "\n".join(texts)
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    if isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
        return " ".join(str(t) for t in prompt)  # token ids: one "word" each
    if not isinstance(prompt, str):
        raise InvalidRequest(400, "'prompt' must be a string, a list of one string, or token ids", param="prompt")
    return prompt


def parse_generation(kind: Kind, raw: bytes, served_model: str | None) -> GenerationRequest:
    """Validate a completion request the way vLLM would, as far as the fake's answers depend on it."""
    try:
        body = json.loads(raw)
    except ValueError:
        raise InvalidRequest(400, "request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise InvalidRequest(400, "request body must be a JSON object")
    model = body.get("model") or served_model or DEFAULT_MODEL
    if served_model is not None and model != served_model:
        raise InvalidRequest(404, f"The model `{model}` does not exist.", "NotFoundError", "model")
    max_tokens = body.get("max_completion_tokens") if kind == "chat" else None
    max_tokens = max_tokens if max_tokens is not None else body.get("max_tokens")
    if max_tokens is not None and (not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1):
        raise InvalidRequest(400, "max_tokens must be a positive integer", param="max_tokens")
    stream_options = body.get("stream_options") or {}
    seed = body.get("seed") or 0
    return GenerationRequest(
        kind=kind,
        model=str(model),
        prompt=_prompt_text(kind, body),
        max_tokens=max_tokens,
        stream=bool(body.get("stream")),
        include_usage=bool(isinstance(stream_options, dict) and stream_options.get("include_usage")),
        ignore_eos=bool(body.get("ignore_eos")),
        seed=seed if isinstance(seed, int) else 0,
    )


class ChunkFormat:
    """Pre-rendered JSON around each streamed token, so a chunk costs one small json.dumps."""

    def __init__(self, request: GenerationRequest, request_id: str, created: int) -> None:
        obj = "chat.completion.chunk" if request.kind == "chat" else "text_completion"
        self._head = (
            f'data: {{"id":"{request_id}","object":"{obj}","created":{created},'
            f'"model":{json.dumps(request.model)},'
        ).encode()
        self._kind = request.kind

    def token(self, delta: dict[str, str] | str, finish_reason: str | None) -> bytes:
        finish = json.dumps(finish_reason)
        if self._kind == "chat":
            choice = f'{{"index":0,"delta":{json.dumps(delta)},"logprobs":null,"finish_reason":{finish}}}'
        else:
            choice = (
                f'{{"index":0,"text":{json.dumps(delta)},"logprobs":null,'
                f'"finish_reason":{finish},"stop_reason":null}}'
            )
        return self._head + f'"choices":[{choice}]}}\n\n'.encode()

    def usage(self, usage: dict[str, int]) -> bytes:
        return self._head + f'"choices":[],"usage":{json.dumps(usage)}}}\n\n'.encode()


def _chunk_delta(kind: Kind, text: str, part: str) -> dict[str, str] | str | None:
    if kind == "text":
        return text
    if part == "think_end":
        return None  # the reasoning parser swallows </think>
    return {"reasoning": text} if part == "reasoning" else {"content": text}


class FakeEngine:
    """One engine instance: readiness, fault knobs, token pacing and metrics."""

    def __init__(self, knobs: Knobs, clock: Callable[[], float] = time.monotonic) -> None:
        self.knobs = knobs
        self._clock = clock
        self._started = clock()
        self._rng = random.Random(knobs.seed)
        self._slots = asyncio.Semaphore(knobs.concurrency)
        self._generations = 0
        self.metrics = Metrics(knobs.served_model_name or DEFAULT_MODEL, knobs.concurrency)

    @property
    def ready(self) -> bool:
        return not self.knobs.never_ready and self._clock() - self._started >= self.knobs.startup_delay_s

    async def handle(self, request: Request, response: Response) -> None:
        path = request.path
        self.metrics.http_requests[path if path in KNOWN_PATHS else "<other>"] += 1
        try:
            await self._route(request, response)
        except InvalidRequest as err:
            await response.send(err.status, error_body(err.status, str(err), err.error_type, err.param))
        if self.knobs.access_log:
            print(f'INFO:     "{request.method} {path} HTTP/1.1" {response.status}', flush=True)

    async def _route(self, request: Request, response: Response) -> None:
        path, method = request.path, request.method
        if path == "/health":
            await response.send(200 if self.ready else 503, b"")
            return
        if path == "/metrics":
            await response.send(200, self.metrics.render().encode(), "text/plain; version=0.0.4")
            return
        if path not in KNOWN_PATHS:
            await response.send(404, b'{"detail":"Not Found"}')
            return
        if not self.ready:
            raise InvalidRequest(503, "The engine is starting", "ServiceUnavailableError")
        if path == "/version":
            await response.send(200, json.dumps({"version": VERSION}).encode())
        elif path == "/v1/models":
            await response.send(200, self._models())
        elif method != "POST":
            await response.send(405, b'{"detail":"Method Not Allowed"}')
        else:
            kind: Kind = "chat" if path == "/v1/chat/completions" else "text"
            await self._generate(parse_generation(kind, request.body, self.knobs.served_model_name), response)

    def _models(self) -> bytes:
        name = self.metrics.model_name
        card = {"id": name, "object": "model", "created": int(time.time()), "owned_by": "vllm", "root": name,
                "parent": None, "max_model_len": 8192}
        return json.dumps({"object": "list", "data": [card]}).encode()

    def _maybe_crash(self) -> None:
        self._generations += 1
        limit = self.knobs.crash_after
        if limit is not None and self._generations > limit:
            print(f"ERROR:    fake engine crashing on purpose after {limit} requests", file=sys.stderr, flush=True)
            os._exit(3)

    def _first_token_delay(self) -> float:
        knobs = self.knobs
        spike = (knobs.spike_after is not None and self._generations > knobs.spike_after) or (
            knobs.spike_rate > 0 and self._rng.random() < knobs.spike_rate
        )
        return (knobs.ttft_ms + (knobs.spike_ms if spike else 0.0)) / 1000

    async def _generate(self, request: GenerationRequest, response: Response) -> None:
        self._maybe_crash()
        if self.knobs.error_rate > 0 and self._rng.random() < self.knobs.error_rate:
            self.metrics.injected_errors += 1
            status = self.knobs.error_status
            raise InvalidRequest(status, "injected failure (FAKE_ENGINE_ERROR_RATE)", "InternalServerError")
        received = self._clock()
        first_delay = self._first_token_delay()
        completion = generate(
            request.prompt,
            seed=self.knobs.seed * 1_000_003 + request.seed,
            reasoning_tokens=self.knobs.reasoning_tokens,
            answer_tokens=self.knobs.answer_tokens,
            max_tokens=request.max_tokens,
            ignore_eos=request.ignore_eos,
        )
        metrics = self.metrics
        metrics.waiting += 1
        await self._slots.acquire()
        metrics.waiting -= 1
        metrics.running += 1
        try:
            send = self._stream if request.stream else self._whole
            await send(request, completion, response, received, received + first_delay)
        finally:
            metrics.running -= 1
            self._slots.release()
        metrics.prompt_tokens += count_prompt_tokens(request.prompt)
        metrics.generation_tokens += len(completion.tokens)
        metrics.success[completion.finish_reason] += 1
        metrics.e2e.observe(self._clock() - received)

    def _due(self, first: float, index: int) -> float:
        tps = self.knobs.tokens_per_s
        return first + (index / tps if tps else 0.0)

    async def _sleep_until(self, due: float) -> None:
        delay = due - self._clock()
        if delay > 0:
            await asyncio.sleep(delay)

    def _usage(self, request: GenerationRequest, completion: Completion) -> dict[str, int]:
        prompt, generated = count_prompt_tokens(request.prompt), len(completion.tokens)
        return {"prompt_tokens": prompt, "total_tokens": prompt + generated, "completion_tokens": generated}

    async def _whole(
        self, request: GenerationRequest, completion: Completion, response: Response, received: float, first: float
    ) -> None:
        await self._sleep_until(first)
        self.metrics.ttft.observe(self._clock() - received)
        await self._sleep_until(self._due(first, len(completion.tokens) - 1))
        request_id = f"{'chatcmpl' if request.kind == 'chat' else 'cmpl'}-{uuid.uuid4().hex}"
        if request.kind == "chat":
            choice: dict[str, Any] = {
                "index": 0,
                "message": {"role": "assistant", "content": completion.text("answer"),
                            "reasoning": completion.text("reasoning"), "tool_calls": []},
                "logprobs": None, "finish_reason": completion.finish_reason, "stop_reason": None,
            }
        else:
            text = "".join(t.text for t in completion.tokens)
            choice = {"index": 0, "text": text, "logprobs": None,
                      "finish_reason": completion.finish_reason, "stop_reason": None}
        body = {
            "id": request_id,
            "object": "chat.completion" if request.kind == "chat" else "text_completion",
            "created": int(time.time()),
            "model": request.model,
            "choices": [choice],
            "usage": self._usage(request, completion),
        }
        await response.send(200, json.dumps(body).encode())

    async def _stream(
        self, request: GenerationRequest, completion: Completion, response: Response, received: float, first: float
    ) -> None:
        request_id = f"{'chatcmpl' if request.kind == 'chat' else 'cmpl'}-{uuid.uuid4().hex}"
        chunks = ChunkFormat(request, request_id, int(time.time()))
        await response.start(200)
        pending: list[bytes] = []
        if request.kind == "chat":
            pending.append(chunks.token({"role": "assistant", "content": ""}, None))
        last = len(completion.tokens) - 1
        previous = 0.0
        for index, token in enumerate(completion.tokens):
            due = self._due(first, index)
            if due > self._clock():
                if index:  # like vLLM, the role chunk leaves with the first token, not before it
                    await response.write(b"".join(pending))
                    pending.clear()
                await self._sleep_until(due)
            now = self._clock()
            if index == 0:
                self.metrics.ttft.observe(now - received)
            else:
                self.metrics.inter_token.observe(now - previous)
            previous = now
            delta = _chunk_delta(request.kind, token.text, token.part)
            finish = completion.finish_reason if index == last else None
            if delta is not None or finish:
                pending.append(chunks.token(delta if delta is not None else {}, finish))
        if request.include_usage:
            pending.append(chunks.usage(self._usage(request, completion)))
        pending.append(b"data: [DONE]\n\n")
        await response.write(b"".join(pending))
        await response.end()
