"""ARM request bodies: read (size cap, nesting cap, no NaN/Infinity) and shape-checked before anything is stored.

Each handler that takes a body calls its check first (``bodies.endpoint(body)`` …). A check looks
only at the fields the emulator reads or stores, and refuses a value of the wrong JSON type with
ARM's 400 ``InvalidRequestContent`` naming the field (``properties.readinessProbe.period``); range
problems the rules table owns (probe durations, counts) are 400 ``BadArgument``. Unknown fields are
left alone, as ARM does. ``stored(kind, body)`` applies the same checks to a row read back from
SQLite, so a damaged row can be set aside at start (see ``emulator/integrity.py``).
"""

from __future__ import annotations

import itertools
import json
import math
import re
from array import array
from collections.abc import Mapping

import anyio.to_thread
from starlette.requests import Request

from emulator import rules
from emulator.rules import ArmError

MAX_BODY_BYTES = 4 * 1024 * 1024  # what ARM accepts in one request
MAX_DEPTH = 64  # ARM bodies here are < 10 levels deep; deeper is an attack, not a resource
_OFF_LOOP_BYTES = 64 * 1024  # bigger bodies are parsed in a worker thread
_KEEP = bytes(set(range(256)) - set(b'[]{}"'))
_STEP = bytes.maketrans(b'[{]}"', b"\x01\x01\xff\xff\x00")
_STRINGS = re.compile(rb'"[^"]*"')


class _Unsafe(ValueError):
    pass


def invalid(field: str, expected: str, value: object) -> ArmError:
    return rules.bad_request(f"The request content is invalid: '{field}' must be {expected}, got {_kind(value)}.",
                             code="InvalidRequestContent")


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, (int, float)):
        return f"number {value!r}"
    if isinstance(value, str):
        return f"string {value[:40]!r}"
    return "an array" if isinstance(value, list) else "an object"


# ---- reading -------------------------------------------------------------------------------------

def too_large() -> ArmError:
    return ArmError(413, "RequestBodyTooLarge",
                    f"The request body is larger than the {MAX_BODY_BYTES} bytes ARM accepts.")


async def read_json(request: Request) -> dict:
    """The body as a JSON object; refused (413) past ``MAX_BODY_BYTES`` — by Content-Length before a byte is
    read, else while reading — and (400) when not JSON, nested deeper than ``MAX_DEPTH``, or holding NaN,
    Infinity or a lone surrogate. Big bodies are parsed off the event loop so scoring is not starved."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise too_large()
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise too_large()
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw:
        return {}
    if len(raw) > _OFF_LOOP_BYTES:
        return await anyio.to_thread.run_sync(parse, raw)
    return parse(raw)


def nesting_depth(raw: bytes) -> int:
    """How deep ``[``/``{`` nest in ``raw`` outside strings, without parsing (linear, no recursion)."""
    text = raw.replace(b"\\\\", b"").replace(b'\\"', b"")  # escapes gone: every '"' left delimits a string
    skeleton = _STRINGS.sub(b"", text.translate(None, _KEEP))
    return max(itertools.accumulate(array("b", skeleton.translate(_STEP))), default=0)


def _no_constant(name: str) -> float:
    raise _Unsafe(f"The request body contains {name}, which JSON does not allow.")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Unsafe(f"The number {text[:40]} in the request body is out of range.")
    return value


def parse(raw: bytes) -> dict:
    if nesting_depth(raw) > MAX_DEPTH:
        raise rules.bad_request(f"The request body is nested more than {MAX_DEPTH} levels deep.",
                                code="InvalidRequestContent")
    try:
        body = json.loads(raw, parse_constant=_no_constant, parse_float=_finite)
        json.dumps(body, ensure_ascii=False).encode()  # lone surrogates cannot be answered back
    except _Unsafe as err:
        raise rules.bad_request(str(err), code="InvalidRequestContent") from None
    except UnicodeEncodeError:
        raise rules.bad_request("The request body contains an unpaired UTF-16 surrogate escape.",
                                code="InvalidRequestContent") from None
    except (ValueError, RecursionError):
        raise rules.bad_request("The request body is not valid JSON.", code="InvalidRequestContent") from None
    if not isinstance(body, dict):
        raise rules.bad_request("The request body must be a JSON object.", code="InvalidRequestContent")
    return body


# ---- field checks --------------------------------------------------------------------------------

def _obj(parent: Mapping, key: str, field: str) -> dict:
    """``parent[key]`` as an object; missing or null is an empty one."""
    value = parent.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise invalid(field, "an object", value)
    return value


def _list(parent: Mapping, key: str, field: str) -> list:
    value = parent.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise invalid(field, "an array", value)
    return value


def _strings(parent: Mapping, field: str, *keys: str) -> None:
    for key in keys:
        value = parent.get(key)
        if value is not None and not isinstance(value, str):
            raise invalid(f"{field}{key}", "a string", value)


def _booleans(parent: Mapping, field: str, *keys: str) -> None:
    for key in keys:
        value = parent.get(key)
        if value is not None and not isinstance(value, bool):
            raise invalid(f"{field}{key}", "a boolean", value)


def _integer(parent: Mapping, key: str, field: str) -> int | None:
    value = parent.get(key)
    if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
        raise invalid(field, "an integer", value)
    return value


def _string_map(parent: Mapping, key: str, field: str) -> None:
    for name, value in _obj(parent, key, field).items():
        if not isinstance(value, str):
            raise invalid(f"{field}.{name}", "a string", value)


def _duration(parent: Mapping, key: str, field: str, positive: bool = False) -> None:
    value = parent.get(key)
    if value is None:
        return
    if not isinstance(value, str):
        raise invalid(field, "an ISO-8601 duration string", value)
    seconds = rules.parse_duration(value, field)
    if positive and seconds <= 0:
        raise rules.bad_request(f"{field} must be longer than zero, got {value!r}.")


def _resource(body: Mapping) -> None:
    """Fields every tracked ARM resource may carry."""
    _strings(body, "", "location", "kind", "name", "id", "type")
    _string_map(body, "tags", "tags")


def case_duplicates(split: Mapping[str, object], field: str) -> None:
    """Deployment names are case-insensitive: ``{"blue": 50, "BLUE": 50}`` names one deployment twice."""
    seen: dict[str, str] = {}
    for name in split:
        if name.lower() in seen:
            raise rules.bad_request(
                f"{field} names deployment '{seen[name.lower()]}' twice ('{seen[name.lower()]}' and '{name}'); "
                "deployment names are case-insensitive.", code="BadRequest")
        seen[name.lower()] = name


# ---- one check per body --------------------------------------------------------------------------

def endpoint(body: Mapping) -> None:
    _resource(body)
    identity = _obj(body, "identity", "identity")
    _strings(identity, "identity.", "type", "principalId", "tenantId")
    _obj(identity, "userAssignedIdentities", "identity.userAssignedIdentities")
    props = _obj(body, "properties", "properties")
    _strings(props, "properties.", "description", "authMode", "publicNetworkAccess", "compute")
    _string_map(props, "properties", "properties.properties")
    for key in ("traffic", "mirrorTraffic"):
        split = _obj(props, key, f"properties.{key}")
        for name, value in split.items():
            if not isinstance(value, int) or isinstance(value, bool):
                raise invalid(f"properties.{key}.{name}", "an integer 0-100", value)
        case_duplicates(split, f"properties.{key}")


def _probe(props: Mapping, key: str) -> None:
    field = f"properties.{key}"
    probe = _obj(props, key, field)
    for name in ("initialDelay", "period", "timeout"):
        _duration(probe, name, f"{field}.{name}", positive=True)
    for name in ("failureThreshold", "successThreshold"):
        value = _integer(probe, name, f"{field}.{name}")
        if value is not None and value < 1:
            raise rules.bad_request(f"{field}.{name} must be a positive integer, got {value!r}.")


def deployment(body: Mapping) -> None:
    _resource(body)
    sku = _obj(body, "sku", "sku")
    _strings(sku, "sku.", "name", "tier", "size", "family")
    _integer(sku, "capacity", "sku.capacity")
    props = _obj(body, "properties", "properties")
    _strings(props, "properties.", "description", "instanceType", "environmentId", "model", "modelMountPath",
             "egressPublicNetworkAccess", "endpointComputeType", "provisioningState")
    _booleans(props, "properties.", "appInsightsEnabled")
    _string_map(props, "properties", "properties.properties")
    _string_map(props, "environmentVariables", "properties.environmentVariables")
    for key in ("codeConfiguration", "scaleSettings", "dataCollector", "livenessProbe", "readinessProbe"):
        _obj(props, key, f"properties.{key}")
    settings = _obj(props, "requestSettings", "properties.requestSettings")
    _duration(settings, "requestTimeout", "properties.requestSettings.requestTimeout")
    _duration(settings, "maxQueueWait", "properties.requestSettings.maxQueueWait")
    _integer(settings, "maxConcurrentRequestsPerInstance", "properties.requestSettings.maxConcurrentRequestsPerInstance")
    _probe(props, "livenessProbe")
    _probe(props, "readinessProbe")


def asset(body: Mapping) -> None:
    """An environment or model version."""
    _resource(body)
    props = _obj(body, "properties", "properties")
    _strings(props, "properties.", "description", "image", "condaFile", "osType", "autoRebuild", "modelUri",
             "modelType", "jobName", "stage")
    _booleans(props, "properties.", "isAnonymous", "isArchived")
    _string_map(props, "tags", "properties.tags")
    _string_map(props, "properties", "properties.properties")
    _obj(props, "flavors", "properties.flavors")
    build = _obj(props, "build", "properties.build")
    _strings(build, "properties.build.", "contextUri", "dockerfilePath")
    config = _obj(props, "inferenceConfig", "properties.inferenceConfig")
    for route in ("livenessRoute", "readinessRoute", "scoringRoute"):
        field = f"properties.inferenceConfig.{route}"
        value = _obj(config, route, field)
        _strings(value, f"{field}.", "path")
        _integer(value, "port", f"{field}.port")


def _number(parent: Mapping, key: str, field: str) -> None:
    value = parent.get(key)
    if value is None:
        return
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise invalid(field, "a number", parent[key]) from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise invalid(field, "a number", parent.get(key))


def autoscale(body: Mapping) -> None:
    """An autoscale setting (PUT) or the part of one a PATCH sends."""
    _resource(body)
    props = _obj(body, "properties", "properties")
    _strings(props, "properties.", "name", "targetResourceUri", "targetResourceLocation")
    _booleans(props, "properties.", "enabled")
    _obj(props, "predictiveAutoscalePolicy", "properties.predictiveAutoscalePolicy")
    for i, note in enumerate(_list(props, "notifications", "properties.notifications")):
        if not isinstance(note, dict):
            raise invalid(f"properties.notifications[{i}]", "an object", note)
    for i, profile in enumerate(_list(props, "profiles", "properties.profiles")):
        field = f"properties.profiles[{i}]"
        if not isinstance(profile, dict):
            raise invalid(field, "an object", profile)
        _strings(profile, f"{field}.", "name")
        _obj(profile, "fixedDate", f"{field}.fixedDate")
        _obj(profile, "recurrence", f"{field}.recurrence")
        capacity = _obj(profile, "capacity", f"{field}.capacity")
        for key in ("minimum", "maximum", "default"):
            value = capacity.get(key)
            if value is not None and not (isinstance(value, str) or
                                          (isinstance(value, int) and not isinstance(value, bool))):
                raise invalid(f"{field}.capacity.{key}", "an integer or a string of one", value)
        for j, rule in enumerate(_list(profile, "rules", f"{field}.rules")):
            rfield = f"{field}.rules[{j}]"
            if not isinstance(rule, dict):
                raise invalid(rfield, "an object", rule)
            trigger = _obj(rule, "metricTrigger", f"{rfield}.metricTrigger")
            tfield = f"{rfield}.metricTrigger."
            _strings(trigger, tfield, "metricName", "metricNamespace", "metricResourceUri", "metricResourceLocation",
                     "operator", "statistic", "timeAggregation")
            _booleans(trigger, tfield, "dividePerInstance")
            _number(trigger, "threshold", tfield + "threshold")
            _duration(trigger, "timeGrain", tfield + "timeGrain")
            _duration(trigger, "timeWindow", tfield + "timeWindow")
            _list(trigger, "dimensions", tfield + "dimensions")
            action = _obj(rule, "scaleAction", f"{rfield}.scaleAction")
            afield = f"{rfield}.scaleAction."
            _strings(action, afield, "direction", "type")
            _number(action, "value", afield + "value")
            _duration(action, "cooldown", afield + "cooldown")


def regenerate_keys(body: Mapping) -> None:
    _strings(body, "", "keyType", "keyValue")


def get_logs(body: Mapping) -> None:
    _strings(body, "", "containerType")
    _integer(body, "tail", "tail")


# ---- rows read back from SQLite ------------------------------------------------------------------

_AUTH_MODES = {"Key", "AMLToken", "AADToken"}


def stored(kind: str, raw: str) -> dict:
    """A stored resource row as the emulator will use it; ``ValueError`` (with the reason) if it is damaged."""
    try:
        body = json.loads(raw, parse_constant=_no_constant, parse_float=_finite)
    except (ValueError, RecursionError) as err:
        raise ValueError(f"body is not valid JSON ({str(err)[:80]})") from None
    if not isinstance(body, dict) or not isinstance(body.get("id"), str) or not isinstance(body.get("name"), str):
        raise ValueError("body is not a resource object with an id and a name")
    if not isinstance(body.get("properties"), dict):
        raise ValueError("body has no properties object")
    try:
        _check_stored(kind, body)
    except ArmError as err:
        raise ValueError(err.message) from None
    return body


def _check_stored(kind: str, body: dict) -> None:
    from emulator import resources  # resources imports the runtime; only needed here

    props = body["properties"]
    if kind == "endpoint":
        endpoint(body)
        if props.get("authMode") not in _AUTH_MODES:
            raise rules.bad_request(f"properties.authMode is {props.get('authMode')!r}")
        for key in ("traffic", "mirrorTraffic"):
            if not isinstance(props.get(key), dict):
                raise rules.bad_request(f"properties.{key} is not an object")
    elif kind == "deployment":
        deployment(body)
        if not isinstance(body.get("sku"), dict) or not isinstance(body["sku"].get("capacity"), int):
            raise rules.bad_request("sku.capacity is not an integer")
        resources.request_timeout_ms(props)
        resources.max_concurrency(props)
    elif kind in ("environment", "model"):
        asset(body)
    elif kind == "autoscale":
        autoscale(body)
        resources.check_autoscale(props)
    else:
        raise rules.bad_request(f"unknown resource kind {kind!r}")
