"""What the fake engine "generates": deterministic tokens from a seed and the prompt.

A completion is R1-shaped: reasoning tokens, one ``</think>`` token, then answer tokens. The
chat API hides ``</think>`` (vLLM's deepseek_r1 parser consumes it) but, as in vLLM, still counts it.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import Literal

THINK_END = "\n</think>\n\n"
WORDS = (
    "the", "a", "model", "token", "answer", "think", "so", "because", "then", "first", "next",
    "summer", "winter", "light", "warm", "cold", "water", "data", "region", "safe", "green", "blue",
    "traffic", "latency", "reason", "step", "check", "result", "therefore", "maybe", "yes", "no",
    "value", "small", "large", "fast", "slow", "request", "stream", "engine", "probe", "ready",
)

Part = Literal["reasoning", "think_end", "answer"]


@dataclass(frozen=True)
class Token:
    text: str
    part: Part


@dataclass(frozen=True)
class Completion:
    tokens: tuple[Token, ...]
    finish_reason: Literal["stop", "length"]

    def text(self, part: Part) -> str | None:
        """The concatenated text of one part, or None when the completion has none of it."""
        texts = [t.text for t in self.tokens if t.part == part]
        return "".join(texts) if texts else None


def count_prompt_tokens(prompt: str) -> int:
    return max(1, len(prompt.split()))


def generate(
    prompt: str,
    *,
    seed: int,
    reasoning_tokens: int,
    answer_tokens: int,
    max_tokens: int | None,
    ignore_eos: bool,
) -> Completion:
    """The completion for ``prompt``: same inputs, same tokens.

    Without ``ignore_eos`` the model "stops" after its natural length unless ``max_tokens`` cuts it
    short; with ``ignore_eos`` it produces exactly ``max_tokens`` (as vLLM does for benchmarks).
    """
    natural = reasoning_tokens + (1 if reasoning_tokens else 0) + answer_tokens
    length = natural
    finish: Literal["stop", "length"] = "stop"
    if max_tokens is not None and (max_tokens < natural or ignore_eos):
        length, finish = max_tokens, "length"
    digest = hashlib.blake2b(f"{seed}\0{prompt}".encode(), digest_size=8).digest()
    words = random.Random(int.from_bytes(digest, "big")).choices(WORDS, k=length)
    tokens = []
    for i, word in enumerate(words):
        if i < reasoning_tokens:
            tokens.append(Token(f" {word}" if i else word.capitalize(), "reasoning"))
        elif i == reasoning_tokens and reasoning_tokens:
            tokens.append(Token(THINK_END, "think_end"))
        else:
            first_answer = i == (reasoning_tokens + 1 if reasoning_tokens else 0)
            tokens.append(Token(word.capitalize() if first_answer else f" {word}", "answer"))
    return Completion(tuple(tokens), finish)
