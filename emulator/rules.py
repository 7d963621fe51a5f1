"""Azure's rules for managed online endpoints, as pure functions raising ARM-shaped errors.

Sources: Azure ML's managed online endpoint limits and its safe-rollout article (traffic and mirror rules).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping

from emulator.skus import Sku, find_sku

NAME = re.compile(r"^[A-Za-z](?:[A-Za-z0-9]|-(?=[A-Za-z0-9]))*$")
MAX_DEPLOYMENTS_PER_ENDPOINT = 20
MAX_INSTANCES = 50
MAX_REQUEST_TIMEOUT_MS = 180_000
MAX_MIRROR_PERCENT = 50
DEFAULT_GPU_QUOTA_CORES = 48  # two single-A100 deployments (2 x 24 cores), not three
_DURATION = re.compile(
    r"^(-)?P(?:(\d+(?:\.\d+)?)D)?(?:T(?:(\d+(?:\.\d+)?)H)?(?:(\d+(?:\.\d+)?)M)?(?:(\d+(?:\.\d+)?)S)?)?$"
)


class ArmError(Exception):
    """An error ARM answers with ``{"error": {"code", "message"}}`` and an HTTP status."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def bad_request(message: str, code: str = "BadArgument") -> ArmError:
    return ArmError(400, code, message)


def not_found(what: str) -> ArmError:
    return ArmError(404, "ResourceNotFound", f"{what} was not found.")


def parse_duration(value: str, field: str) -> float:
    """ISO-8601 duration (``PT1M30S``) to seconds."""
    m = _DURATION.match(value or "")
    if not m or value in ("P", "PT"):
        raise bad_request(f"{field}: {value!r} is not an ISO-8601 duration")
    days, hours, minutes, seconds = (float(g or 0) for g in m.groups()[1:])
    total = days * 86400 + hours * 3600 + minutes * 60 + seconds
    return -total if m.group(1) else total


def check_name(kind: str, name: str) -> None:
    if not 3 <= len(name) <= 32 or not NAME.fullmatch(name):
        raise bad_request(
            f"Invalid {kind} name '{name}': it must be 3-32 characters long, start with a letter "
            "and contain only letters, digits and single dashes (not at the end).",
            code="InvalidResourceName",
        )


def check_traffic(
    traffic: Mapping[str, int], mirror: Mapping[str, int], deployments: Iterable[str]
) -> None:
    """Live traffic sums to 0 or 100 over existing deployments; mirror <= 50 % to one other one."""
    known = {d.lower() for d in deployments}
    for kind, split in (("traffic", traffic), ("mirror traffic", mirror)):
        for name, value in split.items():
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 100:
                raise bad_request(f"The {kind} value for deployment '{name}' must be an integer 0-100, got {value!r}.")
            if name.lower() not in known:
                raise bad_request(
                    f"The {kind} names deployment '{name}', which does not exist on this endpoint.",
                    code="UserError",
                )
    total = sum(traffic.values())
    if total not in (0, 100):
        raise bad_request(f"Traffic values must sum to 0 or 100; they sum to {total}.", code="UserError")
    mirrored = {k: v for k, v in mirror.items() if v}
    if len(mirrored) > 1:
        raise bad_request("Mirror traffic can target only one deployment.", code="UserError")
    for name, value in mirrored.items():
        if value > MAX_MIRROR_PERCENT:
            raise bad_request(
                f"Mirror traffic to '{name}' is {value}%; the maximum is {MAX_MIRROR_PERCENT}%.",
                code="UserError",
            )
        if any(k.lower() == name.lower() and v for k, v in traffic.items()):
            raise bad_request(
                f"Deployment '{name}' cannot receive both live and mirror traffic.", code="UserError"
            )


def require_location(request: Mapping) -> None:
    """Tracked resources (endpoints, deployments, autoscale settings) need ``location`` in a PUT."""
    if not request.get("location"):
        raise ArmError(400, "LocationRequired", "The location property is required for this definition.")


def check_create_only(what: str, existing: Mapping, requested: Mapping, defaults: Mapping[str, object]) -> None:
    """Fields that only a create sets (``instanceType``, ``endpointComputeType`` of a deployment): an
    update that changes one is refused; a new SKU means a new deployment. An omitted field keeps its
    default (``None``: not compared)."""
    for field, default in defaults.items():
        new = requested.get(field, default)
        if new is None:
            continue
        old = existing.get(field, default)
        if str(new).lower() != str(old).lower():
            raise bad_request(
                f"{field} of {what} is {old!r} and cannot be changed to {new!r}: it is set only when the "
                "resource is created. Create a new deployment instead (and move traffic to it).")


def check_key(value: object, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise bad_request(f"{field} must be a non-empty string.")
    return value


def check_deletable(deployment: str, traffic: Mapping[str, int], mirror: Mapping[str, int]) -> None:
    for kind, split in (("live", traffic), ("mirror", mirror)):
        if any(k.lower() == deployment.lower() and v for k, v in split.items()):
            raise bad_request(
                f"Deployment '{deployment}' has {kind} traffic on its endpoint; set its traffic "
                "to 0 before deleting it.",
                code="UserError",
            )


def check_deployment_count(existing: int) -> None:
    if existing >= MAX_DEPLOYMENTS_PER_ENDPOINT:
        raise bad_request(
            f"An endpoint can have at most {MAX_DEPLOYMENTS_PER_ENDPOINT} deployments.",
            code="DeploymentQuotaExceeded",
        )


def check_instance_count(capacity: object) -> int:
    if not isinstance(capacity, int) or isinstance(capacity, bool) or not 1 <= capacity <= MAX_INSTANCES:
        raise bad_request(f"Instance count must be between 1 and {MAX_INSTANCES}, got {capacity!r}.")
    return capacity


def check_request_timeout(seconds: float) -> int:
    ms = int(seconds * 1000)
    if not 0 < ms <= MAX_REQUEST_TIMEOUT_MS:
        raise bad_request(
            f"Request timeout is {ms} ms; it must be between 1 and {MAX_REQUEST_TIMEOUT_MS} ms."
        )
    return ms


def check_instance_type(name: str) -> Sku:
    sku = find_sku(name or "")
    if sku is None:
        raise bad_request(
            f"Instance type '{name}' is not supported for managed online deployments.",
            code="InvalidInstanceType",
        )
    return sku


def skips_reservation(sku: Sku) -> bool:
    """Azure reserves 20 % extra quota for upgrades except on the SKUs marked to skip it (A100/H100)."""
    return sku.gpu_model in {"A100", "H100"}


def quota_cores(sku: Sku, instances: int) -> int:
    return sku.cores * (instances if skips_reservation(sku) else math.ceil(1.2 * instances))


def check_quota(sku: Sku, instances: int, used_elsewhere: int, limit: int, location: str) -> None:
    needed = quota_cores(sku, instances)
    if used_elsewhere + needed > limit:
        raise bad_request(
            f"Not enough quota available for {sku.name} in {location}. Current usage/limit: "
            f"{used_elsewhere}/{limit} cores. Additional needed: {needed} cores. "
            "Request a quota increase or delete other deployments.",
            code="OutOfQuota",
        )
