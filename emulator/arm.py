"""The ARM control plane: the slice of Azure Resource Manager that azure-ai-ml, azure-mgmt-monitor and
azure-mgmt-containerregistry (ACR Tasks, ``emulator/registry.py``) use.

Paths are matched case-insensitively; the api-version must be one of ``emulator/api_versions.py``;
one subscription / resource group / workspace exists. Long-running operations answer with
``Azure-AsyncOperation`` (+ ``Location`` for deletes, PATCHes and actions); polls report the real
state at once (operations are kept in SQLite, so their URLs survive a restart).
Every ARM call needs a bearer token this emulator issued for a management audience.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from contextvars import ContextVar

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from emulator import access, api_versions, bodies, metrics, registry, resources, rules
from emulator.blobs import BlobService
from emulator.faults import FaultInjector
from emulator.layout import StateDir
from emulator.rules import ArmError
from emulator.runtime import Outcome, Runtime, RunSpec
from emulator.store import Store
from emulator.tokens import Issuer, new_key
from emulator.skus import find_sku

log = logging.getLogger(__name__)

_WS = (r"/subscriptions/(?P<sub>[^/]+)/resourcegroups/(?P<rg>[^/]+)"
       r"/providers/microsoft\.machinelearningservices/workspaces/(?P<ws>[^/]+)")
_EP = _WS + r"/onlineendpoints/(?P<ep>[^/]+)"
_DEP = _EP + r"/deployments/(?P<dep>[^/]+)"
_VERSIONS = _WS + r"/(?P<kind>environments|models)/(?P<name>[^/]+)/versions"
_ASSET = _VERSIONS + r"/(?P<version>[^/]+)"
_AUTOSCALE = (r"/subscriptions/(?P<sub>[^/]+)/resourcegroups/(?P<rg>[^/]+)"
              r"/providers/microsoft\.insights/autoscalesettings")
_AUTOSCALE_SUB = r"/subscriptions/(?P<sub>[^/]+)/providers/microsoft\.insights/autoscalesettings"
_OPS = (r"/subscriptions/(?P<sub>[^/]+)/providers/microsoft\.machinelearningservices"
        r"/locations/(?P<loc>[^/]+)/(?P<which>mfeoperationsstatus|mfeoperationresults)/(?P<op>[^/]+)")
_OP_API = "api-version=2023-04-01-preview"
_MAX_OPS = 10_000
_SUBSCRIPTION_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.IGNORECASE)
_QUERY: ContextVar[dict[str, str]] = ContextVar("arm_query", default={})  # the request's query, for handlers


_MODEL_ID = re.compile(_WS + r"/models/[^/]+/versions/[^/]+$", re.IGNORECASE)


def _check_model_reference(model: object) -> None:
    """A deployment's model must be a workspace model-version ARM id. The emulator has no model store
    to upload to, so it does not require the version to be registered (docs/emulator.md)."""
    if model is not None and not (isinstance(model, str) and _MODEL_ID.match(model)):
        raise rules.bad_request(
            f"Model reference {model!r} is not a workspace model version id "
            "(/subscriptions/../workspaces/../models/<name>/versions/<version>).", code="UserError")


def _first(items: list[dict], query: dict[str, str], key: str) -> list[dict]:
    """``items`` cut to the integer query parameter ``key`` (``count``, ``$top``) when it is given."""
    if not query.get(key):
        return items
    try:
        return items[: max(0, int(query[key]))]
    except ValueError:
        raise rules.bad_request(f"{key} must be an integer, got {query[key]!r}.") from None


def _segment(kind: str) -> str:
    """The asset kind as written in ids (the path matched it case-insensitively)."""
    return "environments" if kind.lower() == "environments" else "models"


def _missing(resource: str, rg: str | None) -> ArmError:
    return ArmError(404, "ResourceNotFound", f"The Resource '{resource}' under resource group '{rg}' was not found. "
                    "For more details please go to https://aka.ms/ARMResourceNotFoundFix")


def error_response(err: ArmError, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": err.code, "message": err.message}}, err.status, headers=headers)


async def read_json_body(request: Request) -> dict:
    """The body as a JSON object, size-capped and parsed off the loop when big (emulator/bodies.py)."""
    return await bodies.read_json(request)


class ControlPlane:
    def __init__(self, state: StateDir, store: Store, issuer: Issuer, faults: FaultInjector, blobs: BlobService,
                 location: str, gpu_quota_cores: int, realistic: bool,
                 scope: tuple[str, str, str] = ("00000000-0000-0000-0000-000000000000", "rg-r1", "ws-r1")):
        self.state, self.store, self.issuer, self.faults = state, store, issuer, faults
        self.location = location
        self.subscription_id, self.resource_group, self.workspace = scope  # the one workspace served
        self.gpu_quota_cores = gpu_quota_cores
        self.realistic = realistic
        self.scoring_base = ""
        self.version = 0  # bumped on every change the gateway may care about
        self.registry = registry.Registry(store, blobs, faults, location, self.subscription_id, self.resource_group)
        self.measured = metrics.RequestLog()  # the scoring gateway's per-request record (Azure Monitor metrics)
        self.runtime = Runtime(state.instance_logs, self._on_outcome, self._changed, self.registry)
        self._paced: dict[str, float] = {}  # --realistic: operation id -> InProgress until (monotonic)
        store.on_change(self._changed)
        self._routes: list[tuple[str, re.Pattern, Callable[..., Awaitable[Response]]]] = [
            (m, re.compile(p + r"/?$", re.IGNORECASE), h) for m, p, h in [
                ("GET", _WS, self.get_workspace),
                ("GET", _WS + "/onlineendpoints", self.list_endpoints),
                ("PUT", _EP, self.put_endpoint),
                ("GET", _EP, self.get_endpoint),
                ("PATCH", _EP, self.patch_endpoint),
                ("DELETE", _EP, self.delete_endpoint),
                ("POST", _EP + "/listkeys", self.list_keys),
                ("POST", _EP + "/regeneratekeys", self.regenerate_keys),
                ("POST", _EP + "/token", self.get_token),
                ("GET", _EP + "/deployments", self.list_deployments),
                ("PUT", _DEP, self.put_deployment),
                ("GET", _DEP, self.get_deployment),
                ("PATCH", _DEP, self.patch_deployment),
                ("DELETE", _DEP, self.delete_deployment),
                ("POST", _DEP + "/getlogs", self.get_logs),
                ("GET", _DEP + "/skus", self.list_deployment_skus),
                ("GET", _VERSIONS, self.list_asset_versions),
                ("PUT", _ASSET, self.put_asset),
                ("GET", _ASSET, self.get_asset),
                ("DELETE", _ASSET, self.delete_asset),
                ("GET", _AUTOSCALE, self.list_autoscale),
                ("GET", _AUTOSCALE_SUB, self.list_autoscale_in_subscription),
                ("PUT", _AUTOSCALE + r"/(?P<name>[^/]+)", self.put_autoscale),
                ("GET", _AUTOSCALE + r"/(?P<name>[^/]+)", self.get_autoscale),
                ("PATCH", _AUTOSCALE + r"/(?P<name>[^/]+)", self.patch_autoscale),
                ("DELETE", _AUTOSCALE + r"/(?P<name>[^/]+)", self.delete_autoscale),
                ("GET", _OPS, self.get_operation),
                *self.registry.routes(),
                *metrics.routes(self, _QUERY.get),
            ]
        ]

    # ---- plumbing -------------------------------------------------------------------------

    def _changed(self) -> None:
        self.version += 1

    async def dispatch(self, request: Request) -> Response:
        path = request.url.path
        refused = access.guard(self.issuer, request)  # 401 / 403 (or the caller's permissions) before all else
        if refused is not None:
            return refused
        fault = self.faults.next_error()
        if fault:
            status, code, headers = fault
            return error_response(ArmError(status, code, f"Injected fault: {code} ({status})."), headers)
        try:
            api_versions.check(path, request.query_params.get("api-version"))
        except ArmError as err:
            return error_response(err)
        _QUERY.set(dict(request.query_params))
        matched_path = False
        for method, pattern, handler in self._routes:
            m = pattern.match(path)
            if not m:
                continue
            matched_path = True
            if method != request.method:
                continue
            try:
                self._check_parents(**m.groupdict())
                body = await read_json_body(request) if method in ("PUT", "POST", "PATCH") else {}
                return await handler(body, **m.groupdict())
            except ArmError as err:
                return error_response(err)
        if matched_path:
            return error_response(ArmError(405, "MethodNotAllowed", f"{request.method} is not supported on {path}."))
        return error_response(ArmError(404, "NoRegisteredProviderFound", f"The emulator does not serve {path}."))

    def _check_parents(self, sub: str | None = None, rg: str | None = None, ws: str | None = None,
                       reg: str | None = None, **_: str) -> None:
        """The emulator serves one subscription / resource group / workspace / container registry: any other
        is missing, answered as ARM does, and nothing can be created under it."""
        if sub is not None and not _SUBSCRIPTION_ID.match(sub):
            raise ArmError(400, "InvalidSubscriptionId",
                           f"The provided subscription identifier '{sub}' is malformed or invalid.")
        if sub is not None and sub.lower() != self.subscription_id.lower():
            raise ArmError(404, "SubscriptionNotFound", f"The subscription '{sub}' could not be found.")
        if rg is not None and rg.lower() != self.resource_group.lower():
            raise ArmError(404, "ResourceGroupNotFound", f"Resource group '{rg}' could not be found.")
        if ws is not None and ws.lower() != self.workspace.lower():
            raise _missing(f"{resources.ML}/workspaces/{ws}", rg)
        if reg is not None and reg.lower() != registry.NAME:
            raise _missing(f"{registry.PROVIDER}/registries/{reg}", rg)

    def _new_op(self, target: str, sub: str, done: bool, with_location: bool = False) -> dict[str, str]:
        op_id = uuid.uuid4().hex
        self.store.add_operation(op_id, target, "Succeeded" if done else "InProgress", resources.now_iso(),
                                 keep=_MAX_OPS)  # in SQLite: a poller's URL survives a restart
        if self.realistic:
            if len(self._paced) >= _MAX_OPS:
                self._paced.clear()
            self._paced[op_id] = time.monotonic() + 2.0
        base = (f"{self.issuer.arm_url}/subscriptions/{sub}/providers/Microsoft.MachineLearningServices"
                f"/locations/{self.location}")
        headers = {"Azure-AsyncOperation": f"{base}/mfeOperationsStatus/{op_id}?{_OP_API}",
                   "x-ms-async-operation-timeout": "PT1H"}
        if with_location:
            headers["Location"] = f"{base}/mfeOperationResults/{op_id}?{_OP_API}"
        return headers

    def _settle_ops(self, target: str, status: str, error: tuple[str, str] | None = None) -> None:
        self.store.settle_operations(target, status, error)

    def _on_outcome(self, deployment_id: str, outcome: Outcome) -> None:
        dep = self.store.get(deployment_id)
        if dep is not None:
            dep["properties"]["provisioningState"] = outcome.state
            self.store.put("deployment", dep["id"].rsplit("/deployments/", 1)[0], dep)
        error = (outcome.code, outcome.message) if outcome.state == "Failed" else None
        if error:
            log.warning("deployment %s failed: %s", deployment_id, outcome.message)
        self._settle_ops(deployment_id, outcome.state, error)

    async def get_operation(self, body: dict, sub: str, loc: str, which: str, op: str) -> Response:
        operation = self.store.operation(op)
        if operation is None:
            raise rules.not_found(f"Operation '{op}'")
        _, status, error, started = operation
        if status == "Succeeded" and time.monotonic() < self._paced.get(op, 0.0):
            status = "InProgress"
        if which.lower() == "mfeoperationresults":
            return JSONResponse({}, 202 if status == "InProgress" else 200)
        payload: dict = {"id": op, "name": op, "status": status, "startTime": started}
        headers = {}
        if status == "InProgress" and self.realistic:
            # Retry-After is whole seconds (RFC 9110). Without --realistic an InProgress poll carries
            # none: the client then waits its own polling interval (0.05 s from tasks/clients.py)
            # instead of a whole second per poll.
            headers["Retry-After"] = "1"
        elif error:
            payload["error"] = {"code": error[0], "message": error[1]}
        return JSONResponse(payload, headers=headers)

    # ---- workspace, endpoints ------------------------------------------------------------

    async def get_workspace(self, body: dict, sub: str, rg: str, ws: str) -> Response:
        workspace = resources.workspace(sub, rg, ws, self.location)
        workspace["properties"]["containerRegistry"] = self.registry.id  # the registry images are built in
        return JSONResponse(workspace)

    def _endpoint(self, sub: str, rg: str, ws: str, ep: str) -> dict:
        found = self.store.get(resources.workspace_id(sub, rg, ws) + f"/onlineEndpoints/{ep}")
        if found is None:
            raise rules.not_found(f"Online endpoint '{ep}'")
        return found

    def _present(self, endpoint: dict) -> dict:
        return resources.present_endpoint(endpoint, self.scoring_base)

    async def list_endpoints(self, body: dict, sub: str, rg: str, ws: str) -> Response:
        """The spec's query filters: ``name``, ``computeType``, ``tags`` (``k1=v1,k2=v2``), ``count``."""
        query = {k.lower(): v for k, v in _QUERY.get().items()}
        items = self.store.children("endpoint", resources.workspace_id(sub, rg, ws))
        if query.get("name"):
            items = [e for e in items if e["name"].lower() == query["name"].lower()]
        if query.get("computetype") and query["computetype"].lower() != "managed":
            items = []
        for pair in filter(None, (query.get("tags") or "").split(",")):
            key, _, value = pair.partition("=")
            items = [e for e in items if key in e.get("tags", {}) and (not value or e["tags"][key] == value)]
        return JSONResponse({"value": [self._present(e) for e in _first(items, query, "count")]})

    async def get_endpoint(self, body: dict, sub: str, rg: str, ws: str, ep: str) -> Response:
        return JSONResponse(self._present(self._endpoint(sub, rg, ws, ep)))

    async def put_endpoint(self, body: dict, sub: str, rg: str, ws: str, ep: str) -> Response:
        bodies.endpoint(body)
        rules.check_name("endpoint", ep)
        rules.require_location(body)
        wid = resources.workspace_id(sub, rg, ws)
        eid = f"{wid}/onlineEndpoints/{ep}"
        existing = self.store.get(eid)
        new = resources.endpoint(existing["id"] if existing else eid, existing["name"] if existing else ep,
                                 self.location, body, existing)
        names = {d["name"].lower(): d["name"] for d in self.store.children("deployment", eid)}
        props = new["properties"]
        rules.check_traffic(props["traffic"], props["mirrorTraffic"], names)
        props["traffic"] = {names[k.lower()]: v for k, v in props["traffic"].items()}
        props["mirrorTraffic"] = {names[k.lower()]: v for k, v in props["mirrorTraffic"].items() if v}
        with self.store.transaction():
            self.store.put("endpoint", wid, new)
            if existing is None:  # properties.keys: the initial keys (create only; never returned)
                keys = (body.get("properties") or {}).get("keys") or {}
                self.store.set_keys(
                    eid,
                    rules.check_key(keys["primaryKey"], "keys.primaryKey") if keys.get("primaryKey") else new_key(),
                    rules.check_key(keys["secondaryKey"], "keys.secondaryKey") if keys.get("secondaryKey")
                    else new_key())
        headers = self._new_op(eid, sub, done=True)
        return JSONResponse(self._present(new), 201 if existing is None else 200, headers=headers)

    async def patch_endpoint(self, body: dict, sub: str, rg: str, ws: str, ep: str) -> Response:
        bodies.endpoint(body)
        endpoint = self._endpoint(sub, rg, ws, ep)
        self.store.put("endpoint", resources.workspace_id(sub, rg, ws), resources.patch_endpoint(endpoint, body))
        return Response(status_code=202, headers=self._new_op(endpoint["id"], sub, done=True, with_location=True))

    async def delete_endpoint(self, body: dict, sub: str, rg: str, ws: str, ep: str) -> Response:
        eid = resources.workspace_id(sub, rg, ws) + f"/onlineEndpoints/{ep}"
        if self.store.get(eid) is None:
            return Response(status_code=204)
        for dep in self.store.children("deployment", eid):
            self._settle_ops(dep["id"], "Canceled", ("OperationCanceled", "The endpoint was deleted."))
            self.runtime.remove(dep["id"])
        self.store.delete(eid)
        return Response(status_code=202, headers=self._new_op(eid, sub, done=True, with_location=True))

    def _key_endpoint(self, sub: str, rg: str, ws: str, ep: str, mode: str) -> dict:
        endpoint = self._endpoint(sub, rg, ws, ep)
        if endpoint["properties"]["authMode"] != mode:
            raise rules.bad_request(
                f"Endpoint '{ep}' uses {endpoint['properties']['authMode']} authentication, not {mode}.",
                code="UserError",
            )
        return endpoint

    async def list_keys(self, body: dict, sub: str, rg: str, ws: str, ep: str) -> Response:
        endpoint = self._key_endpoint(sub, rg, ws, ep, "Key")
        primary, secondary = self.store.keys(endpoint["id"]) or ("", "")
        return JSONResponse({"primaryKey": primary, "secondaryKey": secondary})

    async def regenerate_keys(self, body: dict, sub: str, rg: str, ws: str, ep: str) -> Response:
        bodies.regenerate_keys(body)
        endpoint = self._key_endpoint(sub, rg, ws, ep, "Key")
        which = str(body.get("keyType", "")).lower()
        if which not in ("primary", "secondary"):
            raise rules.bad_request(f"keyType must be Primary or Secondary, got {body.get('keyType')!r}.")
        primary, secondary = self.store.keys(endpoint["id"]) or (new_key(), new_key())
        # keyValue sets the key. azure-ai-ml sends the key's *current* value there and Azure still
        # regenerates it (the SDK's begin_regenerate_keys works), so the current value mints a new key.
        value = body.get("keyValue")
        current = primary if which == "primary" else secondary
        fresh = rules.check_key(value, "keyValue") if value is not None and value != current else new_key()
        if which == "primary":
            primary = fresh
        else:
            secondary = fresh
        self.store.set_keys(endpoint["id"], primary, secondary)
        return Response(status_code=202, headers=self._new_op(endpoint["id"], sub, done=True, with_location=True))

    async def get_token(self, body: dict, sub: str, rg: str, ws: str, ep: str) -> Response:
        endpoint = self._key_endpoint(sub, rg, ws, ep, "AMLToken")
        lifetime = self.faults.faults.aml_token_lifetime_seconds
        token, expires = self.issuer.issue_aml_token(endpoint["id"], lifetime)
        return JSONResponse({"accessToken": token, "tokenType": "Bearer", "expiryTimeUtc": expires,
                             "refreshAfterTimeUtc": expires - lifetime // 2})

    # ---- deployments ----------------------------------------------------------------------

    async def list_deployments(self, body: dict, sub: str, rg: str, ws: str, ep: str) -> Response:
        endpoint = self._endpoint(sub, rg, ws, ep)
        return JSONResponse({"value": self.store.children("deployment", endpoint["id"])})

    def _deployment(self, sub: str, rg: str, ws: str, ep: str, dep: str) -> dict:
        found = self.store.get(f"{self._endpoint(sub, rg, ws, ep)['id']}/deployments/{dep}")
        if found is None:
            raise rules.not_found(f"Deployment '{dep}' of endpoint '{ep}'")
        return found

    async def get_deployment(self, body: dict, sub: str, rg: str, ws: str, ep: str, dep: str) -> Response:
        return JSONResponse(self._deployment(sub, rg, ws, ep, dep))

    async def patch_deployment(self, body: dict, sub: str, rg: str, ws: str, ep: str, dep: str) -> Response:
        bodies.deployment(body)
        existing = self._deployment(sub, rg, ws, ep, dep)
        new = resources.patch_deployment(existing, body)
        capacity = rules.check_instance_count(new["sku"].get("capacity"))
        provisioning = False
        if capacity != existing["sku"]["capacity"]:  # a scale, under the same rules as a PUT
            sku = rules.check_instance_type(new["properties"].get("instanceType"))
            rules.check_quota(sku, capacity, self._quota_used(existing["id"]), self.gpu_quota_cores, self.location)
            environment = self._asset(new["properties"].get("environmentId"), "Environment")
            new["properties"]["provisioningState"] = "Updating"
            provisioning = self._apply(new, resources.run_spec(new, environment, None, 0.0))
        else:
            self.store.put("deployment", existing["id"].rsplit("/deployments/", 1)[0], new)
        return Response(status_code=202,
                        headers=self._new_op(existing["id"], sub, done=not provisioning, with_location=True))

    async def list_deployment_skus(self, body: dict, sub: str, rg: str, ws: str, ep: str, dep: str) -> Response:
        return JSONResponse(resources.deployment_skus(self._deployment(sub, rg, ws, ep, dep)))

    def _asset(self, asset_id: str | None, what: str) -> dict:
        found = self.store.get(asset_id) if asset_id and asset_id.startswith("/") else None
        if found is None:
            raise rules.bad_request(f"{what} '{asset_id}' was not found in this workspace.", code="UserError")
        return found

    def _quota_used(self, excluding: str) -> int:
        used = 0
        for d in self.store.all("deployment"):
            sku = find_sku(d["properties"].get("instanceType") or "")
            if sku and d["id"].lower() != excluding.lower():
                used += rules.quota_cores(sku, d["sku"]["capacity"])
        return used

    async def put_deployment(self, body: dict, sub: str, rg: str, ws: str, ep: str, dep: str) -> Response:
        bodies.deployment(body)
        endpoint = self._endpoint(sub, rg, ws, ep)
        rules.check_name("deployment", dep)
        rules.require_location(body)
        did = f"{endpoint['id']}/deployments/{dep}"
        existing = self.store.get(did)
        if existing is None:
            rules.check_deployment_count(len(self.store.children("deployment", endpoint["id"])))
        props = body.get("properties") or {}
        if existing is not None:
            rules.check_create_only(f"deployment '{existing['name']}'", existing["properties"], props,
                                    {"instanceType": None, "endpointComputeType": "Managed"})
        capacity = rules.check_instance_count((body.get("sku") or {}).get("capacity", 1))
        sku = rules.check_instance_type(props.get("instanceType"))
        resources.request_timeout_ms(props)
        resources.max_concurrency(props)
        environment = self._asset(props.get("environmentId"), "Environment")
        _check_model_reference(props.get("model"))
        rules.check_quota(sku, capacity, self._quota_used(did), self.gpu_quota_cores, self.location)
        new = resources.deployment(existing["id"] if existing else did, existing["name"] if existing else dep,
                                   self.location, body, existing, "Creating" if existing is None else "Updating")
        fail = ("Provisioning failed: the deployment's instances could not be created (injected fault)."
                if self.faults.provisioning_fails(dep) else None)
        delay = self.faults.faults.provisioning_delay_seconds + (3.0 if self.realistic else 0.0)
        provisioning = self._apply(new, resources.run_spec(new, environment, fail, delay))
        headers = self._new_op(did, sub, done=not provisioning)
        return JSONResponse(new, 201 if existing is None else 200, headers=headers)

    def _apply(self, deployment: dict, spec: RunSpec) -> bool:
        """Store the deployment and reconcile its instances; True while provisioning is under way."""
        parent = deployment["id"].rsplit("/deployments/", 1)[0]
        self.store.put("deployment", parent, deployment)
        self._settle_ops(deployment["id"], "Canceled",
                         ("OperationCanceled", "Superseded by a newer update of the deployment."))
        provisioning = self.runtime.apply(spec)
        if not provisioning:
            deployment["properties"]["provisioningState"] = "Succeeded"
            self.store.put("deployment", parent, deployment)
        return provisioning

    def scale_deployment(self, deployment_id: str, capacity: int) -> bool:
        """Autoscale's change of instance count, under the same quota rule as a PUT; False if refused."""
        dep = self.store.get(deployment_id)
        environment = self.store.get((dep or {}).get("properties", {}).get("environmentId") or "")
        sku = find_sku((dep or {}).get("properties", {}).get("instanceType") or "")
        if dep is None or environment is None or sku is None:
            return False
        try:
            rules.check_instance_count(capacity)
            rules.check_quota(sku, capacity, self._quota_used(deployment_id), self.gpu_quota_cores, self.location)
        except ArmError as err:
            log.warning("autoscale of %s to %s instances refused: %s", dep["name"], capacity, err.message)
            return False
        dep["sku"]["capacity"] = capacity
        dep["properties"]["provisioningState"] = "Updating"
        self._apply(dep, resources.run_spec(dep, environment, None, 0.0))
        return True

    async def delete_deployment(self, body: dict, sub: str, rg: str, ws: str, ep: str, dep: str) -> Response:
        endpoint = self._endpoint(sub, rg, ws, ep)
        did = f"{endpoint['id']}/deployments/{dep}"
        if self.store.get(did) is None:
            return Response(status_code=204)
        rules.check_deletable(dep, endpoint["properties"]["traffic"], endpoint["properties"]["mirrorTraffic"])
        self._settle_ops(did, "Canceled", ("OperationCanceled", "The deployment was deleted."))
        self.store.delete(did)
        self.runtime.remove(did)
        return Response(status_code=202, headers=self._new_op(did, sub, done=True, with_location=True))

    async def get_logs(self, body: dict, sub: str, rg: str, ws: str, ep: str, dep: str) -> Response:
        bodies.get_logs(body)
        found = self._deployment(sub, rg, ws, ep, dep)
        tail = body.get("tail", 5000)
        if not isinstance(tail, int) or not 0 <= tail <= 10_000:
            raise rules.bad_request(f"tail must be an integer 0-10000, got {tail!r}.")
        container = str(body.get("containerType") or "InferenceServer")
        if container.lower() == "inferenceserver":
            return JSONResponse({"content": self.runtime.logs(found["id"], tail)})
        if container.lower() == "storageinitializer":
            model = found["properties"].get("model")
            line = f"Model {model} is mounted read-only." if model else "No model to initialize."
            return JSONResponse({"content": line})
        raise rules.bad_request(f"containerType must be InferenceServer or StorageInitializer, got {container!r}.")

    def restore(self) -> None:
        """After a restart: bring back the instances of every deployment that was not Failed."""
        for dep in self.store.all("deployment"):
            if dep["properties"].get("provisioningState") == "Failed":
                continue
            environment = self.store.get(dep["properties"].get("environmentId") or "")
            if environment is None:
                continue
            self.runtime.apply(resources.run_spec(dep, environment, None, 0.0))

    # ---- environment and model versions --------------------------------------------------

    async def put_asset(self, body: dict, sub: str, rg: str, ws: str, kind: str, name: str, version: str) -> Response:
        bodies.asset(body)
        wid = resources.workspace_id(sub, rg, ws)
        segment = _segment(kind)
        aid = f"{wid}/{segment}/{name}/versions/{version}"
        existing = self.store.get(aid)
        props = body.get("properties") or {}
        if segment == "environments" and not (props.get("image") or props.get("build")):
            raise rules.bad_request(f"Environment {name}:{version} needs an image or a build context.")
        new = resources.versioned_asset(existing["id"] if existing else aid, segment, version, body, existing)
        self.store.put(segment[:-1], f"{wid}/{segment}/{name}", new)
        return JSONResponse(new, 201 if existing is None else 200)

    async def list_asset_versions(self, body: dict, sub: str, rg: str, ws: str, kind: str, name: str) -> Response:
        """What ``ml.environments.list(name=...)`` sends: ``listViewType`` (ActiveOnly by default: no archived
        versions) and ``$top``; oldest first [INF]; one page (``{"value": [...]}``, no ``nextLink``)."""
        query = {k.lower(): v for k, v in _QUERY.get().items()}
        segment = _segment(kind)
        items = self.store.children(segment[:-1], resources.workspace_id(sub, rg, ws) + f"/{segment}/{name}")
        view = query.get("listviewtype", "ActiveOnly").lower()
        if view != "all":
            archived = view == "archivedonly"
            items = [v for v in items if bool(v["properties"].get("isArchived")) == archived]
        return JSONResponse({"value": _first(items, query, "$top")})

    async def get_asset(self, body: dict, sub: str, rg: str, ws: str, kind: str, name: str, version: str) -> Response:
        aid = resources.workspace_id(sub, rg, ws) + f"/{kind}/{name}/versions/{version}"
        found = self.store.get(aid)
        if found is None:
            raise rules.not_found(f"{kind[:-1].capitalize()} {name}:{version}")
        return JSONResponse(found)

    async def delete_asset(self, body: dict, sub: str, rg: str, ws: str, kind: str, name: str,
                           version: str) -> Response:
        aid = resources.workspace_id(sub, rg, ws) + f"/{kind}/{name}/versions/{version}"
        if self.store.get(aid) is None:
            return Response(status_code=204)
        self.store.delete(aid)
        return Response(status_code=200)

    # ---- autoscale settings (Microsoft.Insights) -------------------------------------------

    def _autoscale_id(self, sub: str, rg: str, name: str) -> str:
        return resources.resource_group_id(sub, rg) + f"/providers/Microsoft.Insights/autoscalesettings/{name}"

    async def list_autoscale(self, body: dict, sub: str, rg: str) -> Response:
        return JSONResponse({"value": self.store.children("autoscale", resources.resource_group_id(sub, rg))})

    async def get_autoscale(self, body: dict, sub: str, rg: str, name: str) -> Response:
        found = self.store.get(self._autoscale_id(sub, rg, name))
        if found is None:
            raise rules.not_found(f"Autoscale setting '{name}'")
        return JSONResponse(found)

    async def list_autoscale_in_subscription(self, body: dict, sub: str) -> Response:
        prefix = f"/subscriptions/{sub}/".lower()
        return JSONResponse({"value": [s for s in self.store.all("autoscale") if s["id"].lower().startswith(prefix)]})

    async def put_autoscale(self, body: dict, sub: str, rg: str, name: str) -> Response:
        bodies.autoscale(body)
        rules.require_location(body)
        aid = self._autoscale_id(sub, rg, name)
        existing = self.store.get(aid)
        new = resources.autoscale(existing["id"] if existing else aid, name, self.location, body)
        self.store.put("autoscale", resources.resource_group_id(sub, rg), new)
        return JSONResponse(new, 201 if existing is None else 200)

    async def patch_autoscale(self, body: dict, sub: str, rg: str, name: str) -> Response:
        bodies.autoscale(body)
        aid = self._autoscale_id(sub, rg, name)
        existing = self.store.get(aid)
        if existing is None:
            raise rules.not_found(f"Autoscale setting '{name}'")
        merged = {**existing, "tags": body.get("tags", existing.get("tags")),
                  "properties": {**existing["properties"], **(body.get("properties") or {})}}
        new = resources.autoscale(existing["id"], existing["name"], self.location, merged)
        self.store.put("autoscale", resources.resource_group_id(sub, rg), new)
        return JSONResponse(new)

    async def delete_autoscale(self, body: dict, sub: str, rg: str, name: str) -> Response:
        aid = self._autoscale_id(sub, rg, name)
        if self.store.get(aid) is None:
            return Response(status_code=204)
        self.store.delete(aid)
        return Response(status_code=200)
