"""What a rollout records in Azure, for the day-two flows: tags on deployments and on the endpoint.

Records live on the resources themselves (not in one machine's reports), so rollback, redeploy, status
and guard read the same truth from any worker. Values are short JSON; tags hold no secrets.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from typing import Any, TypeVar

Record = TypeVar("Record")

IMAGE_TAG = "r1-image"  # deployment: the digest-pinned image it runs
MODEL_TAG = "r1-model"  # deployment: the model asset name:version it serves
PREVIOUS_TAG = "r1-previous"  # endpoint: the colour a promotion replaced (what rollback puts back)
LAST_ROLLOUT_TAG = "r1-last-rollout"  # endpoint: the last rollout's outcome
MAX_REASON_CHARS = 200


@dataclass(frozen=True)
class Previous:
    """The spec a promotion rolled away from: enough to stage it again after it was retired."""

    colour: str
    image: str
    spec_hash: str
    model: str
    at: str

    def encode(self) -> str:
        return encode(self)


@dataclass(frozen=True)
class LastRollout:
    outcome: str
    reason: str
    run: str
    new: str | None
    old: str | None
    at: str

    def encode(self) -> str:
        return encode(replace(self, reason=self.reason[:MAX_REASON_CHARS]))


def encode(record: Any) -> str:
    """A dataclass record as the compact JSON a tag value holds (the rollout lock's lease is one too)."""
    return json.dumps(asdict(record), separators=(",", ":"))


def decode(kind: type[Record], value: str | None) -> Record | None:
    """The record in a tag value; a missing, hand-edited or truncated one is absent, never trusted."""
    if not value:
        return None
    try:
        return kind(**json.loads(value))
    except (ValueError, TypeError):
        return None


def previous(tags: dict[str, str] | None) -> Previous | None:
    return decode(Previous, (tags or {}).get(PREVIOUS_TAG))


def last_rollout(tags: dict[str, str] | None) -> LastRollout | None:
    return decode(LastRollout, (tags or {}).get(LAST_ROLLOUT_TAG))
