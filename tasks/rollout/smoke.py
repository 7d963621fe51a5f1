"""Smoke test of one deployment: a few real chat completions aimed at it with the routing header.

What counts as healthy for an R1 model: HTTP 200 from the deployment we aimed at, a non-empty answer,
the reasoning separated from the answer (the deepseek_r1 parser is on), and token usage reported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx

from tasks.azureml.scoring import DEPLOYMENT_HEADER, BearerProvider
from tasks.loadtest.client import tls_context

SMOKE_PROMPTS = (
    "Which is better, summer or winter?",
    "What is 17 times 3?",
    "Name a colour of the sky.",
)


@dataclass
class SmokeResult:
    deployment: str
    passed: bool
    checks: list[dict[str, Any]] = field(default_factory=list)

    @property
    def problems(self) -> list[str]:
        return [p for c in self.checks for p in c["problems"]]


def chat_problems(status: int, headers: dict[str, str], body: Any, deployment: str) -> list[str]:
    """Everything wrong with one non-streamed chat completion answer (empty list when healthy)."""
    if status != 200:
        return [f"HTTP {status}: {str(body)[:200]}"]
    problems = []
    served = headers.get(DEPLOYMENT_HEADER)
    if served != deployment:
        problems.append(f"served by {served!r}, not {deployment!r}")
    try:
        message = body["choices"][0]["message"]
    except (KeyError, IndexError, TypeError):
        return problems + ["no choices[0].message in the answer"]
    if not (message.get("content") or "").strip():
        problems.append("empty answer (content)")
    if not (message.get("reasoning") or message.get("reasoning_content") or "").strip():
        problems.append("no separated reasoning (is --reasoning-parser deepseek_r1 on?)")
    if "</think>" in (message.get("content") or ""):
        problems.append("</think> leaked into the answer")
    usage = body.get("usage") or {}
    if not usage.get("completion_tokens"):
        problems.append("no usage.completion_tokens")
    return problems


def run_smoke(
    scoring_base: str,
    bearer: BearerProvider,
    deployment: str,
    model: str,
    verify: str | bool = True,
    max_tokens: int = 64,
    timeout_s: float = 120.0,
) -> SmokeResult:
    """POST each smoke prompt to ``{scoring_base}/v1/chat/completions`` aimed at ``deployment``."""
    result = SmokeResult(deployment, passed=True)
    with httpx.Client(verify=tls_context(verify), timeout=timeout_s) as client:
        for prompt in SMOKE_PROMPTS:
            response = client.post(
                f"{scoring_base.rstrip('/')}/v1/chat/completions",
                headers={
                    "Authorization": f"Bearer {bearer().get_secret_value()}",
                    DEPLOYMENT_HEADER: deployment,
                },
                json={"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens},
            )
            try:
                body: Any = response.json()
            except ValueError:
                body = response.text
            problems = chat_problems(response.status_code, dict(response.headers), body, deployment)
            result.checks.append({"prompt": prompt, "status": response.status_code, "problems": problems})
    result.passed = not result.problems
    return result
