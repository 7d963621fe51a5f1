"""ARM ids and response bodies for the resources the emulator serves (pure functions)."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping

from emulator import rules
from emulator.runtime import ProbeSpec, RunSpec

ML = "Microsoft.MachineLearningServices"
_AUTH_MODES = {"key": "Key", "amltoken": "AMLToken", "aadtoken": "AADToken"}
_PROBE_DEFAULTS = ProbeSpec()


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def workspace_id(sub: str, rg: str, ws: str) -> str:
    return f"/subscriptions/{sub}/resourceGroups/{rg}/providers/{ML}/workspaces/{ws}"


def resource_group_id(sub: str, rg: str) -> str:
    return f"/subscriptions/{sub}/resourceGroups/{rg}"


def workspace(sub: str, rg: str, ws: str, location: str) -> dict:
    return {
        "id": workspace_id(sub, rg, ws), "name": ws, "type": f"{ML}/workspaces", "location": location,
        "identity": {"type": "SystemAssigned"}, "tags": {},
        "properties": {
            "friendlyName": ws, "publicNetworkAccess": "Disabled", "v1LegacyMode": False,
            "managedNetwork": {"isolationMode": "AllowOnlyApprovedOutbound", "status": {"status": "Active"}},
            "discoveryUrl": "", "provisioningState": "Succeeded",
        },
    }


def system_data(existing: Mapping | None) -> dict:
    created = (existing or {}).get("systemData", {}).get("createdAt") or now_iso()
    return {"createdAt": created, "createdBy": "emulator", "createdByType": "User",
            "lastModifiedAt": now_iso(), "lastModifiedBy": "emulator", "lastModifiedByType": "User"}


def check_location(requested: str | None, location: str) -> str:
    if requested and requested.replace(" ", "").lower() != location.lower():
        raise rules.bad_request(
            f"Location '{requested}' does not match the workspace location '{location}'.",
            code="LocationNotAvailableForResourceType",
        )
    return location


def auth_mode(value: object) -> str:
    mode = _AUTH_MODES.get(str(value or "Key").lower())
    if mode is None:
        raise rules.bad_request(f"Auth mode {value!r} is not one of Key, AMLToken, AADToken.")
    return mode


def _int_split(value: object, field: str) -> dict[str, int]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise rules.bad_request(f"{field} must be an object of deployment name to percentage.")
    return dict(value)


def endpoint(eid: str, name: str, location: str, request: Mapping, existing: Mapping | None) -> dict:
    props = request.get("properties") or {}
    identity = dict(request.get("identity") or {"type": "SystemAssigned"})
    identity.setdefault("principalId", str(uuid.uuid5(uuid.NAMESPACE_URL, eid.lower())))
    identity.setdefault("tenantId", "00000000-0000-0000-0000-0000000000e1")
    body_props = {
        "description": props.get("description"),
        "authMode": auth_mode(props.get("authMode")),
        "properties": {**(props.get("properties") or {}), "azureml.onlineendpointid": eid},
        "traffic": _int_split(props.get("traffic"), "traffic"),
        "mirrorTraffic": _int_split(props.get("mirrorTraffic"), "mirrorTraffic"),
        "provisioningState": "Succeeded",
    }
    if props.get("publicNetworkAccess") is not None:
        body_props["publicNetworkAccess"] = props["publicNetworkAccess"]
    return {
        "id": eid, "name": name, "type": f"{ML}/workspaces/onlineEndpoints",
        "location": check_location(request.get("location"), location), "kind": "Managed",
        "tags": request.get("tags") or {}, "identity": identity, "systemData": system_data(existing),
        "properties": body_props,
    }


def present_endpoint(body: dict, scoring_base: str) -> dict:
    """Add the URIs that depend on where the gateway listens now (they change across restarts)."""
    out = {**body, "properties": dict(body["properties"])}
    out["properties"]["scoringUri"] = f"{scoring_base}/endpoints/{body['name']}/score"
    out["properties"]["swaggerUri"] = f"{scoring_base}/endpoints/{body['name']}/swagger.json"
    return out


def deployment(did: str, name: str, location: str, request: Mapping, existing: Mapping | None,
               state: str) -> dict:
    props = dict(request.get("properties") or {})
    sku = dict(request.get("sku") or {})
    sku.setdefault("name", "Default")
    sku.setdefault("capacity", 1)
    props.update({"scaleSettings": {"scaleType": "Default"}, "endpointComputeType": "Managed",
                  "provisioningState": state})
    return {
        "id": did, "name": name, "type": f"{ML}/workspaces/onlineEndpoints/deployments",
        "location": check_location(request.get("location"), location), "kind": "Managed",
        "tags": request.get("tags") or {}, "sku": sku, "systemData": system_data(existing),
        "properties": props,
    }


def request_timeout_ms(props: Mapping) -> int:
    settings = props.get("requestSettings") or {}
    raw = settings.get("requestTimeout")
    return rules.check_request_timeout(rules.parse_duration(raw, "requestTimeout")) if raw else 5000


def max_concurrency(props: Mapping) -> int:
    value = (props.get("requestSettings") or {}).get("maxConcurrentRequestsPerInstance", 1)
    if not isinstance(value, int) or value < 1:
        raise rules.bad_request(f"maxConcurrentRequestsPerInstance must be a positive integer, got {value!r}.")
    return value


def probe(raw: Mapping | None, path: str, field: str) -> ProbeSpec:
    raw = raw or {}
    d = _PROBE_DEFAULTS

    def seconds(key: str, default: float) -> float:
        value = rules.parse_duration(raw[key], f"{field}.{key}") if raw.get(key) else default
        if value < 0:
            raise rules.bad_request(f"{field}.{key} must not be negative, got {raw[key]!r}.")
        return value

    def count(key: str, default: int) -> int:
        value = raw.get(key, default)
        if not isinstance(value, int) or value < 1:
            raise rules.bad_request(f"{field}.{key} must be a positive integer, got {value!r}.")
        return value

    return ProbeSpec(
        path=path, initial_delay=seconds("initialDelay", d.initial_delay), period=seconds("period", d.period),
        timeout=seconds("timeout", d.timeout), success_threshold=count("successThreshold", 1),
        failure_threshold=count("failureThreshold", d.failure_threshold),
    )


def route_path(environment: Mapping, route: str, default: str) -> str:
    config = (environment.get("properties") or {}).get("inferenceConfig") or {}
    return (config.get(route) or {}).get("path") or default


def run_spec(dep: Mapping, environment: Mapping, fail_message: str | None, start_delay: float) -> RunSpec:
    props = dep["properties"]
    env = {str(k): str(v) for k, v in (props.get("environmentVariables") or {}).items()}
    return RunSpec(
        deployment_id=dep["id"],
        image=(environment.get("properties") or {}).get("image") or "",
        env=tuple(sorted(env.items())),
        capacity=dep["sku"]["capacity"],
        readiness=probe(props.get("readinessProbe"), route_path(environment, "readinessRoute", "/health"),
                        "readinessProbe"),
        liveness=probe(props.get("livenessProbe"), route_path(environment, "livenessRoute", "/health"),
                       "livenessProbe"),
        fail_message=fail_message,
        start_delay=start_delay,
    )


def versioned_asset(aid: str, segment: str, version: str, request: Mapping, existing: Mapping | None) -> dict:
    """An environment or model version (``segment``: environments | models); the SDK needs ``id``
    and ``properties`` back."""
    props = {**(request.get("properties") or {}), "provisioningState": "Succeeded"}
    if segment == "models":
        props.setdefault("flavors", {})  # azure-ai-ml's Model._from_rest_object iterates it
    return {"id": aid, "name": version, "type": f"{ML}/workspaces/{segment}/versions",
            "systemData": system_data(existing), "properties": props}


def autoscale(aid: str, name: str, location: str, request: Mapping) -> dict:
    props = dict(request.get("properties") or {})
    check_autoscale(props)
    props["name"] = name
    return {"id": aid, "name": name, "type": "Microsoft.Insights/autoscaleSettings",
            "location": request.get("location") or location, "tags": request.get("tags") or {},
            "properties": props}


def check_autoscale(props: Mapping) -> None:
    if not props.get("targetResourceUri"):
        raise rules.bad_request("Autoscale setting needs properties.targetResourceUri.", code="InvalidRequest")
    profiles = props.get("profiles")
    if not isinstance(profiles, list) or not 1 <= len(profiles) <= 20:
        raise rules.bad_request("Autoscale setting needs 1-20 profiles.", code="InvalidRequest")
    for p in profiles:
        cap = p.get("capacity") or {}
        try:
            lo, hi, default = int(cap["minimum"]), int(cap["maximum"]), int(cap["default"])
        except (KeyError, TypeError, ValueError):
            raise rules.bad_request(
                f"Profile '{p.get('name')}' needs integer capacity minimum, maximum and default.",
                code="InvalidRequest",
            ) from None
        if not 0 <= lo <= default <= hi:
            raise rules.bad_request(
                f"Profile '{p.get('name')}': capacity must satisfy minimum <= default <= maximum.",
                code="InvalidRequest",
            )
