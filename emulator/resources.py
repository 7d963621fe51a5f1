"""ARM ids and response bodies for the resources the emulator serves (pure functions)."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping

from emulator import rules
from emulator.runtime import ProbeSpec, RunSpec

ML = "Microsoft.MachineLearningServices"
_AUTH_MODES = {"key": "Key", "amltoken": "AMLToken", "aadtoken": "AADToken"}
_IDENTITY_TYPES = {"none": "None", "systemassigned": "SystemAssigned", "userassigned": "UserAssigned",
                   "systemassigned,userassigned": "SystemAssigned,UserAssigned"}
TENANT_ID = "00000000-0000-0000-0000-0000000000e1"
DEPLOYMENT_TYPE = f"{ML}/workspaces/onlineEndpoints/deployments"
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


def _uuid(*parts: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "#".join(p.lower() for p in parts)))


def identity(resource_id: str, requested: Mapping | None) -> dict:
    """A managed service identity as ARM answers it: ``None`` has no ids; ``SystemAssigned`` gets a
    principalId and tenantId; each user-assigned identity (keyed by its ARM id) a clientId and
    principalId. The ids are stable per resource / identity (uuid5), so a re-PUT keeps them."""
    requested = requested or {"type": "SystemAssigned"}
    if not isinstance(requested, Mapping):
        raise rules.bad_request("identity must be an object with a type.")
    kind = _IDENTITY_TYPES.get(str(requested.get("type") or "").replace(" ", "").lower())
    if kind is None:
        raise rules.bad_request(
            f"Identity type {requested.get('type')!r} is not one of None, SystemAssigned, UserAssigned, "
            "'SystemAssigned,UserAssigned'.")
    out: dict = {"type": kind}
    if kind.startswith("SystemAssigned"):
        out["principalId"] = _uuid(resource_id)
        out["tenantId"] = TENANT_ID
    assigned = requested.get("userAssignedIdentities") or {}
    if not isinstance(assigned, Mapping):
        raise rules.bad_request("identity.userAssignedIdentities must be an object keyed by identity id.")
    if kind.endswith("UserAssigned"):
        if not assigned:
            raise rules.bad_request(f"Identity type {kind} needs at least one userAssignedIdentities entry.")
        out["userAssignedIdentities"] = {
            uid: {"principalId": _uuid(uid, "principal"), "clientId": _uuid(uid, "client")} for uid in assigned}
    elif assigned:
        raise rules.bad_request(f"userAssignedIdentities is only allowed with a UserAssigned identity type, not {kind}.")
    return out


def endpoint(eid: str, name: str, location: str, request: Mapping, existing: Mapping | None) -> dict:
    props = request.get("properties") or {}
    body_props = {
        "description": props.get("description"),
        "authMode": auth_mode(props.get("authMode")),
        "properties": {**(props.get("properties") or {}), "azureml.onlineendpointid": eid},
        "traffic": _int_split(props.get("traffic"), "traffic"),
        "mirrorTraffic": _int_split(props.get("mirrorTraffic"), "mirrorTraffic"),
        "provisioningState": "Succeeded",
    }
    body_props["publicNetworkAccess"] = props.get("publicNetworkAccess") or "Enabled"  # Azure's default
    return {
        "id": eid, "name": name, "type": f"{ML}/workspaces/onlineEndpoints",
        "location": check_location(request.get("location"), location), "kind": "Managed",
        "tags": request.get("tags") or {}, "identity": identity(eid, request.get("identity")),
        "systemData": system_data(existing), "properties": body_props,
    }


def _only(request: Mapping, allowed: set[str], model: str) -> None:
    extra = sorted(set(request) - allowed)
    if extra:
        raise rules.bad_request(
            f"A PATCH ({model}) changes only {', '.join(sorted(allowed))}; it cannot set {', '.join(extra)}.")


def _tags(request: Mapping, existing: Mapping) -> dict:
    tags = request.get("tags", existing.get("tags"))
    if tags is not None and not isinstance(tags, Mapping):
        raise rules.bad_request("tags must be an object of strings.")
    return dict(tags or {})


def patch_endpoint(existing: Mapping, request: Mapping) -> dict:
    """PATCH body PartialMinimalTrackedResourceWithIdentity: ``tags`` (replaced as a whole) and
    ``identity`` (``userAssignedIdentities`` entries set to null are removed)."""
    _only(request, {"tags", "identity"}, "PartialMinimalTrackedResourceWithIdentity")
    out = {**existing, "tags": _tags(request, existing), "systemData": system_data(existing)}
    if request.get("identity") is not None:
        patch = request["identity"]
        if not isinstance(patch, Mapping):
            raise rules.bad_request("identity must be an object with a type.")
        assigned = dict(existing.get("identity", {}).get("userAssignedIdentities") or {})
        for uid, value in (patch.get("userAssignedIdentities") or {}).items():
            if value is None:
                assigned = {k: v for k, v in assigned.items() if k.lower() != uid.lower()}
            else:
                assigned[uid] = value
        kind = patch.get("type") or existing.get("identity", {}).get("type")
        if str(kind).replace(" ", "").lower() in ("none", "systemassigned"):
            assigned = {}
        out["identity"] = identity(existing["id"], {"type": kind, "userAssignedIdentities": assigned})
    return out


def patch_deployment(existing: Mapping, request: Mapping) -> dict:
    """PATCH body PartialMinimalTrackedResourceWithSku: ``tags`` and ``sku`` (merged; ``capacity``
    scales the deployment)."""
    _only(request, {"tags", "sku"}, "PartialMinimalTrackedResourceWithSku")
    sku = request.get("sku") or {}
    if not isinstance(sku, Mapping):
        raise rules.bad_request("sku must be an object.")
    _only(sku, {"name", "tier", "size", "family", "capacity"}, "PartialSku")
    return {**existing, "tags": _tags(request, existing), "systemData": system_data(existing),
            "sku": {**existing["sku"], **{k: v for k, v in sku.items() if v is not None}},
            "properties": dict(existing["properties"])}


def deployment_skus(dep: Mapping) -> dict:
    """GET .../deployments/{d}/skus: the one SKU a managed deployment scales in (SkuResource)."""
    return {"value": [{
        "resourceType": DEPLOYMENT_TYPE,
        "sku": {"name": dep["sku"].get("name") or "Default", "tier": dep["sku"].get("tier") or "Standard"},
        "capacity": {"minimum": 1, "maximum": rules.MAX_INSTANCES, "default": 1, "scaleType": "Automatic"},
    }]}


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
    props["egressPublicNetworkAccess"] = props.get("egressPublicNetworkAccess") or "Enabled"  # Azure's default
    return {
        "id": did, "name": name, "type": DEPLOYMENT_TYPE,
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
    else:
        props["osType"] = props.get("osType") or "Linux"  # Azure's default
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
