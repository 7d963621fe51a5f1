"""What a region serves now, where its workspace lives, and whether a rollout holds its endpoint: reads only."""

from __future__ import annotations

import time
from typing import Any

from azure.core.exceptions import ResourceNotFoundError

from tasks.azureml.endpoint import read_live_state
from tasks.rollout import lock
from tasks.rollout.tags import IMAGE_TAG
from tasks.settings import Settings

WAIT_POLL_S = 2.0


def live_region(ml: Any, s: Settings) -> str | None:
    """The region the workspace really lives in (None: there is no such workspace)."""
    try:
        return (ml.workspaces.get(s.workspace).location or "").lower()
    except ResourceNotFoundError:
        return None


def serving_image(ml: Any, endpoint: str) -> str | None:
    """The image the colour at 100 % runs (None: no endpoint, or nothing serves all traffic)."""
    live = read_live_state(ml, endpoint)
    serving = [name for name, share in live.traffic.items() if share == 100]
    if not serving:
        return None
    return (ml.online_deployments.get(name=serving[0], endpoint_name=endpoint).tags or {}).get(IMAGE_TAG)


def wait_unlocked(ml: Any, endpoint: str, timeout_s: float = lock.LEASE_S) -> str | None:
    """Wait while a live rollout holds the endpoint (one a killed parent started, still running); returns its
    run id when there was one. A stale lease never blocks: the next rollout takes it over and converges."""
    waited = None
    mine = lock.me("regions")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            tags = ml.online_endpoints.get(endpoint).tags or {}
        except ResourceNotFoundError:
            return waited
        holder = lock.blocking_holder(tags, mine)
        if holder is None:
            return waited
        waited = holder.run
        time.sleep(WAIT_POLL_S)
    return waited
