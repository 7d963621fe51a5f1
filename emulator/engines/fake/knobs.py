"""The fake engine's knobs: ``FAKE_ENGINE_*`` environment variables (plus vLLM's own ``VLLM_ARGS``).

They reach an instance through a deployment's ``environment_variables``, which is how rollout and
load tests inject slow starts, slow tokens, errors, latency spikes and crashes.
"""

from __future__ import annotations

import shlex

from pydantic import AliasChoices, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "FAKE_ENGINE_"
DEFAULT_MAX_NUM_SEQS = 256  # vLLM's default


class KnobsError(Exception):
    """Invalid knobs: one line per problem, naming the environment variable."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


class Knobs(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    startup_delay_s: float = Field(0.0, ge=0)
    never_ready: bool = False
    ttft_ms: float = Field(0.0, ge=0)
    tokens_per_s: float = Field(0.0, ge=0)  # 0: no pacing, every token at once
    reasoning_tokens: int = Field(12, ge=0)
    answer_tokens: int = Field(8, ge=0)
    error_rate: float = Field(0.0, ge=0, le=1)
    error_status: int = Field(500, ge=400, le=599)
    spike_rate: float = Field(0.0, ge=0, le=1)
    spike_after: int | None = Field(None, ge=0)
    spike_ms: float = Field(0.0, ge=0)
    crash_after: int | None = Field(None, ge=0)
    seed: int = 0
    model: str | None = None
    max_num_seqs: int | None = Field(None, ge=1)
    access_log: bool = True
    vllm_args: str = Field("", validation_alias=AliasChoices("VLLM_ARGS"))

    @model_validator(mode="after")
    def _something_to_say(self) -> Knobs:
        if self.reasoning_tokens + self.answer_tokens < 1:
            raise ValueError("reasoning_tokens + answer_tokens must be at least 1")
        return self

    def _vllm_flag(self, name: str) -> str | None:
        args = shlex.split(self.vllm_args)
        for i, arg in enumerate(args):
            if arg == name and i + 1 < len(args):
                return args[i + 1]
            if arg.startswith(name + "="):
                return arg.split("=", 1)[1]
        return None

    @property
    def served_model_name(self) -> str | None:
        """The one model name the engine answers to, as vLLM derives it; None accepts any name."""
        return self.model or self._vllm_flag("--served-model-name") or self._vllm_flag("--model")

    @property
    def concurrency(self) -> int:
        """How many requests run at once; the rest wait (vllm:num_requests_waiting)."""
        if self.max_num_seqs:
            return self.max_num_seqs
        flag = self._vllm_flag("--max-num-seqs")
        return int(flag) if flag and flag.isdigit() and int(flag) > 0 else DEFAULT_MAX_NUM_SEQS


def load_knobs() -> Knobs:
    """Read the knobs from the environment, or raise KnobsError listing every bad one."""
    try:
        return Knobs()
    except ValidationError as err:
        raise KnobsError([_problem(e["loc"], e["msg"]) for e in err.errors()]) from None


def _problem(loc: tuple[int | str, ...], message: str) -> str:
    name = "_".join(str(part) for part in loc).upper()
    return f"{ENV_PREFIX}{name}: {message}" if name else message
