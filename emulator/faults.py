"""Faults on purpose: make the control plane throttle, fail, or provision slowly or not at all.

Set at start from ``R1_EMULATOR_FAULTS`` (JSON) or at any time with POST /_emulator/faults.
Fields (all optional):
    error_rate        fraction 0-1 of ARM calls answered with an error status (seeded: reproducible)
    fail_next         the next N ARM calls are answered with an error status
    statuses          the error statuses to cycle through, from 429, 500, 503 (default all three)
    retry_after       seconds in the Retry-After header of 429/503 answers (default 1)
    fail_provisioning deployment names whose provisioning fails ("*" = every deployment)
    provisioning_delay_seconds  extra time before a deployment's instances start
    aml_token_lifetime_seconds  lifetime of tokens from the ``token`` call (default 3600)
    build_seconds     0-600: an ACR Tasks run that builds takes at least this long (a run stays in flight,
                      so a client's own timeout, a cancel and a restart mid-run can be exercised)
    seed              random seed for error_rate (default 0)
"""

from __future__ import annotations

import random
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

ErrorStatus = Literal[429, 500, 503]
_CODES = {429: "TooManyRequests", 500: "InternalServerError", 503: "ServiceUnavailable"}


class Faults(BaseModel):
    model_config = ConfigDict(extra="forbid")

    error_rate: float = Field(0.0, ge=0, le=1)
    fail_next: int = Field(0, ge=0)
    statuses: list[ErrorStatus] = Field(default_factory=lambda: [429, 500, 503], min_length=1)
    retry_after: float = Field(1.0, ge=0, le=60)
    fail_provisioning: list[str] = Field(default_factory=list)
    provisioning_delay_seconds: float = Field(0.0, ge=0, le=600)
    aml_token_lifetime_seconds: int = Field(3600, ge=0, le=86_400)
    build_seconds: float = Field(0.0, ge=0, le=600)
    seed: int = 0


class FaultInjector:
    def __init__(self, faults: Faults | None = None):
        self.set(faults or Faults())

    def set(self, faults: Faults) -> None:
        self.faults = faults
        self._rng = random.Random(faults.seed)
        self._turn = 0

    def next_error(self) -> tuple[int, str, dict[str, str]] | None:
        """The (status, code, headers) to answer this call with, or None to serve it."""
        f = self.faults
        if f.fail_next:
            self.faults = f.model_copy(update={"fail_next": f.fail_next - 1})
        elif not (f.error_rate and self._rng.random() < f.error_rate):
            return None
        status = f.statuses[self._turn % len(f.statuses)]
        self._turn += 1
        headers = {"Retry-After": f"{f.retry_after:g}"} if status in (429, 503) else {}
        return status, _CODES[status], headers

    def provisioning_fails(self, deployment: str) -> bool:
        names = {n.lower() for n in self.faults.fail_provisioning}
        return "*" in names or deployment.lower() in names
