"""One request's measurements, and how a stream of OpenAI-style SSE events becomes them.

Pure: the client hands in (timestamp, raw bytes) per network read and this module decides what each
event means. Every timestamp is on the run's clock, in seconds. Formulas (also in docs/loadtest.md):

- TTFT  = first streamed token of any kind (the first choice event, text or not) - actual send
- TTFA  = first answer chunk (after reasoning ends) - actual send
- TPOT  = (last choice event - first choice event) / (output tokens - 1), output tokens from server usage
- E2E   = end of the response (stream closed after ``[DONE]``) - actual send
- send lag = actual send - intended send; "from intended" latencies add it back (coordinated omission)
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

THINK_CLOSE = "</think>"
EVENT_SLACK = 3  # tokens vs events: role/finish-only events and swallowed </think> or EOS tokens
MULTI_TOKEN_RATIO = 1.5  # at least this many server tokens per event: the server bundles tokens


@dataclass(slots=True)
class RequestRecord:
    """Everything measured about one request; derived metrics are properties (seconds, None if undefined)."""

    index: int
    intended_s: float
    sent_s: float
    end_s: float = 0.0
    warmup: bool = False
    status: int | None = None
    error: str | None = None  # error class: http_<code>, timeout, connect_error, read_error, stream_error, ...
    error_detail: str | None = None
    deployment: str | None = None  # who served it (response header azureml-model-deployment)
    first_event_s: float | None = None  # the first event carrying a choice, text or not (vLLM bench's TTFT point)
    first_token_s: float | None = None
    first_answer_s: float | None = None
    last_token_s: float | None = None  # the last event carrying a choice, text or not
    reasoning_chunks: int = 0
    answer_chunks: int = 0
    coalesced_chunks: int = 0  # text chunks that arrived in the same network read as the previous one
    choice_events: int = 0  # events carrying a choice, with or without text (usage-only trailer excluded)
    chunk_times_s: list[float] = field(default_factory=list)
    prompt_tokens: int | None = None
    completion_tokens: int | None = None  # server usage; None when the server sent none
    usage_reasoning_tokens: int | None = None  # usage.completion_tokens_details.reasoning_tokens if > 0
    finish_reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def text_chunks(self) -> int:
        return self.reasoning_chunks + self.answer_chunks

    @property
    def output_tokens(self) -> int | None:
        """Server-counted output tokens; None without usage (never re-tokenized on the client)."""
        return self.completion_tokens

    @property
    def reasoning_tokens(self) -> int | None:
        """From usage when the server reports it, else the reasoning chunk count when events are tokens."""
        if self.usage_reasoning_tokens:
            return self.usage_reasoning_tokens
        return self.reasoning_chunks if self.one_token_per_event else None

    @property
    def answer_tokens(self) -> int | None:
        reasoning = self.reasoning_tokens
        if self.completion_tokens is None or reasoning is None:
            return None
        return self.completion_tokens - reasoning

    @property
    def token_event_gap(self) -> int | None:
        """Server tokens minus choice events (None without usage).

        vLLM streams one event per token; a role-only first event and a finish-only last event
        add events without tokens, and a reasoning parser swallows ``</think>`` (a token without an
        event), so a few either way still means one token per event.
        """
        return None if self.completion_tokens is None else self.completion_tokens - self.choice_events

    @property
    def one_token_per_event(self) -> bool:
        gap = self.token_event_gap
        return gap is not None and abs(gap) <= EVENT_SLACK

    @property
    def multi_token_events(self) -> bool:
        """Clearly more server tokens than events: the server bundles several tokens per event."""
        gap = self.token_event_gap
        if gap is None or gap <= EVENT_SLACK:
            return False
        return self.completion_tokens >= MULTI_TOKEN_RATIO * self.choice_events

    @property
    def ttft_s(self) -> float | None:
        return _since(self.first_token_s, self.sent_s)

    @property
    def ttfa_s(self) -> float | None:
        return _since(self.first_answer_s, self.sent_s)

    @property
    def tpot_s(self) -> float | None:
        tokens = self.output_tokens
        if self.first_token_s is None or self.last_token_s is None or not tokens or tokens < 2:
            return None
        return (self.last_token_s - self.first_token_s) / (tokens - 1)

    @property
    def e2e_s(self) -> float:
        return self.end_s - self.sent_s

    @property
    def send_lag_s(self) -> float:
        return self.sent_s - self.intended_s

    @property
    def ttft_from_intended_s(self) -> float | None:
        return _since(self.first_token_s, self.intended_s)

    @property
    def e2e_from_intended_s(self) -> float:
        return self.end_s - self.intended_s

    @property
    def chunk_gaps_s(self) -> list[float]:
        t = self.chunk_times_s
        return [b - a for a, b in zip(t, t[1:])]

    def to_json(self) -> dict[str, Any]:
        """The per-request JSONL row: raw fields plus every derived metric in milliseconds."""
        row = asdict(self)
        for name in ("ttft", "ttfa", "tpot", "e2e", "send_lag", "ttft_from_intended", "e2e_from_intended"):
            value = getattr(self, f"{name}_s")
            row[f"{name}_ms"] = None if value is None else round(value * 1000, 4)
        row.update(reasoning_tokens=self.reasoning_tokens, answer_tokens=self.answer_tokens,
                   token_event_gap=self.token_event_gap)
        return row


def _since(t: float | None, start: float) -> float | None:
    return None if t is None else t - start


class StreamAccumulator:
    """Feeds SSE bytes, read by read, into a ``RequestRecord``.

    A read's timestamp applies to every event in it, so chunks the server (or a proxy) coalesced
    show up as zero gaps and are counted in ``coalesced_chunks``.
    """

    def __init__(self, record: RequestRecord):
        self.record = record
        self.done = False
        self._buffer = b""
        self._separated_reasoning = False  # the server splits reasoning into its own field
        self._tail = ""  # last characters of inline text, to find a </think> split across chunks
        self._inline_close: int | None = None  # text chunk count when an inline </think> was seen
        self._last_read_s: float | None = None

    def feed(self, now: float, data: bytes) -> None:
        self._buffer = (self._buffer + data).replace(b"\r\n", b"\n")  # after joining: a CRLF may span reads
        *events, self._buffer = self._buffer.split(b"\n\n")
        for event in events:
            payload = b"\n".join(line[5:].lstrip() for line in event.split(b"\n") if line.startswith(b"data:"))
            if payload:
                self._event(now, payload)

    def _event(self, now: float, payload: bytes) -> None:
        rec = self.record
        if payload == b"[DONE]":
            self.done = True
            return
        try:
            obj = json.loads(payload)
        except ValueError:
            rec.error, rec.error_detail = "bad_payload", payload[:120].decode(errors="replace")
            return
        if obj.get("error"):
            err = obj["error"]
            rec.error = "stream_error"
            rec.error_detail = str(err.get("message") if isinstance(err, dict) else err)[:200]
            return
        if obj.get("usage"):
            self._usage(obj["usage"])
        for choice in obj.get("choices") or ():
            self._choice(now, choice)

    def _usage(self, usage: dict[str, Any]) -> None:
        rec = self.record
        rec.prompt_tokens = usage.get("prompt_tokens", rec.prompt_tokens)
        rec.completion_tokens = usage.get("completion_tokens", rec.completion_tokens)
        details = usage.get("completion_tokens_details") or {}
        rec.usage_reasoning_tokens = details.get("reasoning_tokens") or None

    def _choice(self, now: float, choice: dict[str, Any]) -> None:
        rec = self.record
        rec.choice_events += 1
        if rec.first_event_s is None:
            rec.first_event_s = rec.first_token_s = now  # a token of any kind, even one without text
        rec.last_token_s = now  # tokens that decode to no text (EOS under ignore_eos) still end the decode
        if choice.get("finish_reason"):
            rec.finish_reason = choice["finish_reason"]
        delta = choice.get("delta")
        if delta is None:  # completions API
            reasoning, answer = None, choice.get("text")
        else:
            reasoning = delta.get("reasoning") or delta.get("reasoning_content")
            answer = delta.get("content")
        if reasoning:
            self._separated_reasoning = True
            rec.reasoning_chunks += 1
            self._text(now, answer=False)
        if answer:
            rec.answer_chunks += 1
            self._text(now, answer=True)
            if not self._separated_reasoning and self._inline_close is None:
                self._tail = (self._tail + answer)[-64:]
                if THINK_CLOSE in self._tail:
                    self._inline_close = rec.text_chunks

    def _text(self, now: float, answer: bool) -> None:
        rec = self.record
        if answer and rec.first_answer_s is None:
            rec.first_answer_s = now
        if self._last_read_s == now:
            rec.coalesced_chunks += 1
        self._last_read_s = now
        rec.chunk_times_s.append(now)

    def finish(self, now: float) -> RequestRecord:
        """Close the record at ``now``: an inline ``</think>`` re-splits reasoning and answer."""
        rec = self.record
        rec.end_s = now
        if self._inline_close is not None:
            # Chunks up to and including the one closing </think> were reasoning, not answer.
            rec.reasoning_chunks, rec.answer_chunks = self._inline_close, rec.answer_chunks - self._inline_close
            answer_times = rec.chunk_times_s[self._inline_close:]
            rec.first_answer_s = answer_times[0] if answer_times else None
        if rec.error is None and not self.done:
            rec.error = "incomplete_stream"
            rec.error_detail = "the stream ended without data: [DONE]"
        return rec
