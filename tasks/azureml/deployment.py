"""Deployment operations through azure-ai-ml: stage a colour, wait for readiness, fetch logs, delete.

A staged deployment carries the hash of its spec as a tag, so a re-run can tell "this colour already
runs what we want" (resume) from "this idle colour is stale" (replace) by reading live state alone.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from azure.ai.ml.entities import ManagedOnlineDeployment
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

from tasks.rollout.reconcile import SPEC_HASH_TAG
from tasks.rollout.tags import IMAGE_TAG, MODEL_TAG
from tasks.settings import Settings
from tasks.plan.specs import build_deployment, deployment_dict

TERMINAL_OK = "succeeded"
TERMINAL_FAILED = ("failed", "canceled")


def desired_deployment(settings: Settings, colour: str, image: str) -> ManagedOnlineDeployment:
    """The deployment the settings describe, tagged with the hash of everything but its name."""
    deployment = build_deployment(settings, colour, image)
    spec = deployment_dict(deployment)
    spec.pop("name", None)
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:16]
    # image and model are recorded beside the hash (not hashed twice): what rollback and redeploy read back
    deployment.tags = {**(deployment.tags or {}), SPEC_HASH_TAG: digest, IMAGE_TAG: image, MODEL_TAG: settings.model_asset}
    return deployment


def spec_hash(deployment: ManagedOnlineDeployment) -> str:
    return deployment.tags[SPEC_HASH_TAG]


def start_deployment(ml: Any, deployment: ManagedOnlineDeployment) -> None:
    """Send the PUT and return: readiness is polled separately, with the probe window as the deadline."""
    ml.online_deployments.begin_create_or_update(deployment)


def delete_deployment(ml: Any, endpoint: str, name: str) -> bool:
    """Delete and wait; False when it was already gone (idempotent)."""
    try:
        ml.online_deployments.begin_delete(name=name, endpoint_name=endpoint).result()
        return True
    except ResourceNotFoundError:
        return False


def state_name(state: Any) -> str:
    """"Succeeded", not "DeploymentProvisioningState.SUCCEEDED": the SDK hands out a str enum or a str."""
    return str(getattr(state, "value", state) or "Unknown")


@dataclass(frozen=True)
class Readiness:
    ready: bool
    state: str
    waited_s: float
    error: str | None = None


def backoff_delays(first_s: float = 0.2, factor: float = 1.6, cap_s: float = 10.0):
    delay = first_s
    while True:
        yield delay
        delay = min(cap_s, delay * factor)


def wait_ready(
    ml: Any,
    endpoint: str,
    name: str,
    deadline_s: float,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> Readiness:
    """Poll the provisioning state with backoff until Succeeded, Failed, or the deadline."""
    start = clock()
    delays = backoff_delays()
    while True:
        try:
            state = state_name(ml.online_deployments.get(name=name, endpoint_name=endpoint).provisioning_state)
        except ResourceNotFoundError:
            state = "NotFound"
        except HttpResponseError as err:  # transient ARM trouble is not a verdict on the deployment
            state = f"Unknown ({err.status_code})"
        waited = clock() - start
        if state.lower() == TERMINAL_OK:
            return Readiness(True, state, waited)
        if state.lower() in TERMINAL_FAILED or state == "NotFound":
            return Readiness(False, state, waited, f"deployment {name} provisioning ended {state}")
        if waited >= deadline_s:
            return Readiness(False, state, waited, f"deployment {name} not ready after {waited:.0f} s ({state})")
        sleep(min(next(delays), max(0.0, deadline_s - waited)))


def fetch_logs(ml: Any, endpoint: str, name: str, lines: int = 200) -> str:
    """The container's last lines, for the report; never raises (logs are evidence, not a step)."""
    try:
        return ml.online_deployments.get_logs(name=name, endpoint_name=endpoint, lines=lines)
    except HttpResponseError as err:
        return f"(logs unavailable: {err.message})"
