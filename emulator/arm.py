"""The ARM control plane: the slice of Azure Resource Manager that azure-ai-ml and azure-mgmt-monitor use.

Paths are matched case-insensitively and any api-version is accepted. Long-running operations
answer with ``Azure-AsyncOperation`` (+ ``Location`` for deletes and actions); polls report the
real state at once, with a fractional Retry-After only on InProgress polls (never on a 202).
Every ARM call needs a bearer token this emulator issued for a management audience.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from emulator import access, bodies, resources, rules
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
_ASSET = _WS + r"/(?P<kind>environments|models)/(?P<name>[^/]+)/versions/(?P<version>[^/]+)"
_AUTOSCALE = (r"/subscriptions/(?P<sub>[^/]+)/resourcegroups/(?P<rg>[^/]+)"
              r"/providers/microsoft\.insights/autoscalesettings")
_OPS = (r"/subscriptions/(?P<sub>[^/]+)/providers/microsoft\.machinelearningservices"
        r"/locations/(?P<loc>[^/]+)/(?P<which>mfeoperationsstatus|mfeoperationresults)/(?P<op>[^/]+)")
_OP_API = "api-version=2023-04-01-preview"
_MAX_OPS = 10_000


_MODEL_ID = re.compile(_WS + r"/models/[^/]+/versions/[^/]+$", re.IGNORECASE)


def _check_model_reference(model: object) -> None:
    """A deployment's model must be a workspace model-version ARM id. The emulator has no model store
    to upload to, so it does not require the version to be registered (docs/emulator.md)."""
    if model is not None and not (isinstance(model, str) and _MODEL_ID.match(model)):
        raise rules.bad_request(
            f"Model reference {model!r} is not a workspace model version id "
            "(/subscriptions/../workspaces/../models/<name>/versions/<version>).", code="UserError")


def error_response(err: ArmError, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": err.code, "message": err.message}}, err.status, headers=headers)


async def read_json_body(request: Request) -> dict:
    """The body as a JSON object, size-capped and parsed off the loop when big (emulator/bodies.py)."""
    return await bodies.read_json(request)


@dataclass
class Operation:
    target: str
    status: str = "InProgress"  # InProgress | Succeeded | Failed | Canceled
    error: tuple[str, str] | None = None
    ready_at: float = 0.0  # --realistic pacing: InProgress until then
    started: str = ""


class ControlPlane:
    def __init__(self, state: StateDir, store: Store, issuer: Issuer, faults: FaultInjector,
                 location: str, gpu_quota_cores: int, realistic: bool):
        self.state, self.store, self.issuer, self.faults = state, store, issuer, faults
        self.location = location
        self.gpu_quota_cores = gpu_quota_cores
        self.realistic = realistic
        self.scoring_base = ""
        self.version = 0  # bumped on every change the gateway may care about
        self.runtime = Runtime(state.instance_logs, self._on_outcome, self._changed)
        self._ops: dict[str, Operation] = {}
        store.on_change(self._changed)
        self._routes: list[tuple[str, re.Pattern, Callable[..., Awaitable[Response]]]] = [
            (m, re.compile(p + r"/?$", re.IGNORECASE), h) for m, p, h in [
                ("GET", _WS, self.get_workspace),
                ("GET", _WS + "/onlineendpoints", self.list_endpoints),
                ("PUT", _EP, self.put_endpoint),
                ("GET", _EP, self.get_endpoint),
                ("DELETE", _EP, self.delete_endpoint),
                ("POST", _EP + "/listkeys", self.list_keys),
                ("POST", _EP + "/regeneratekeys", self.regenerate_keys),
                ("POST", _EP + "/token", self.get_token),
                ("GET", _EP + "/deployments", self.list_deployments),
                ("PUT", _DEP, self.put_deployment),
                ("GET", _DEP, self.get_deployment),
                ("DELETE", _DEP, self.delete_deployment),
                ("POST", _DEP + "/getlogs", self.get_logs),
                ("PUT", _ASSET, self.put_asset),
                ("GET", _ASSET, self.get_asset),
                ("GET", _AUTOSCALE, self.list_autoscale),
                ("PUT", _AUTOSCALE + r"/(?P<name>[^/]+)", self.put_autoscale),
                ("GET", _AUTOSCALE + r"/(?P<name>[^/]+)", self.get_autoscale),
                ("PATCH", _AUTOSCALE + r"/(?P<name>[^/]+)", self.patch_autoscale),
                ("DELETE", _AUTOSCALE + r"/(?P<name>[^/]+)", self.delete_autoscale),
                ("GET", _OPS, self.get_operation),
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
        matched_path = False
        for method, pattern, handler in self._routes:
            m = pattern.match(path)
            if not m:
                continue
            matched_path = True
            if method != request.method:
                continue
            try:
                body = await read_json_body(request) if method in ("PUT", "POST", "PATCH") else {}
                return await handler(body, **m.groupdict())
            except ArmError as err:
                return error_response(err)
        if matched_path:
            return error_response(ArmError(405, "MethodNotAllowed", f"{request.method} is not supported on {path}."))
        return error_response(ArmError(404, "NoRegisteredProviderFound", f"The emulator does not serve {path}."))

    def _new_op(self, target: str, sub: str, done: bool, with_location: bool = False) -> dict[str, str]:
        if len(self._ops) >= _MAX_OPS:  # keep memory bounded: forget the oldest half
            for stale in list(self._ops)[: _MAX_OPS // 2]:
                del self._ops[stale]
        op_id = uuid.uuid4().hex
        pace = 2.0 if self.realistic else 0.0
        self._ops[op_id] = Operation(target.lower(), "Succeeded" if done else "InProgress",
                                     ready_at=time.monotonic() + pace, started=resources.now_iso())
        base = (f"{self.issuer.arm_url}/subscriptions/{sub}/providers/Microsoft.MachineLearningServices"
                f"/locations/{self.location}")
        headers = {"Azure-AsyncOperation": f"{base}/mfeOperationsStatus/{op_id}?{_OP_API}",
                   "x-ms-async-operation-timeout": "PT1H"}
        if with_location:
            headers["Location"] = f"{base}/mfeOperationResults/{op_id}?{_OP_API}"
        return headers

    def _settle_ops(self, target: str, status: str, error: tuple[str, str] | None = None) -> None:
        for op in self._ops.values():
            if op.target == target.lower() and op.status == "InProgress":
                op.status, op.error = status, error

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
        operation = self._ops.get(op)
        if operation is None:
            raise rules.not_found(f"Operation '{op}'")
        status = operation.status
        if status == "Succeeded" and time.monotonic() < operation.ready_at:
            status = "InProgress"
        if which.lower() == "mfeoperationresults":
            return JSONResponse({}, 202 if status == "InProgress" else 200)
        payload: dict = {"id": op, "name": op, "status": status, "startTime": operation.started}
        headers = {}
        if status == "InProgress":
            headers["Retry-After"] = "1" if self.realistic else "0.05"
        elif operation.error:
            payload["error"] = {"code": operation.error[0], "message": operation.error[1]}
        return JSONResponse(payload, headers=headers)

    # ---- workspace, endpoints ------------------------------------------------------------

    async def get_workspace(self, body: dict, sub: str, rg: str, ws: str) -> Response:
        return JSONResponse(resources.workspace(sub, rg, ws, self.location))

    def _endpoint(self, sub: str, rg: str, ws: str, ep: str) -> dict:
        found = self.store.get(resources.workspace_id(sub, rg, ws) + f"/onlineEndpoints/{ep}")
        if found is None:
            raise rules.not_found(f"Online endpoint '{ep}'")
        return found

    def _present(self, endpoint: dict) -> dict:
        return resources.present_endpoint(endpoint, self.scoring_base)

    async def list_endpoints(self, body: dict, sub: str, rg: str, ws: str) -> Response:
        items = self.store.children("endpoint", resources.workspace_id(sub, rg, ws))
        return JSONResponse({"value": [self._present(e) for e in items]})

    async def get_endpoint(self, body: dict, sub: str, rg: str, ws: str, ep: str) -> Response:
        return JSONResponse(self._present(self._endpoint(sub, rg, ws, ep)))

    async def put_endpoint(self, body: dict, sub: str, rg: str, ws: str, ep: str) -> Response:
        bodies.endpoint(body)
        rules.check_name("endpoint", ep)
        wid = resources.workspace_id(sub, rg, ws)
        eid = f"{wid}/onlineEndpoints/{ep}"
        existing = self.store.get(eid)
        if existing is None and self.store.by_name("endpoint", ep):
            raise ArmError(409, "EndpointNameAlreadyExists",
                           f"An online endpoint named '{ep}' already exists in region {self.location}; "
                           "endpoint names must be unique in a region.")
        new = resources.endpoint(existing["id"] if existing else eid, existing["name"] if existing else ep,
                                 self.location, body, existing)
        names = {d["name"].lower(): d["name"] for d in self.store.children("deployment", eid)}
        props = new["properties"]
        rules.check_traffic(props["traffic"], props["mirrorTraffic"], names)
        props["traffic"] = {names[k.lower()]: v for k, v in props["traffic"].items()}
        props["mirrorTraffic"] = {names[k.lower()]: v for k, v in props["mirrorTraffic"].items() if v}
        with self.store.transaction():
            self.store.put("endpoint", wid, new)
            if existing is None:
                self.store.set_keys(eid, new_key(), new_key())
        headers = self._new_op(eid, sub, done=True)
        return JSONResponse(self._present(new), 201 if existing is None else 200, headers=headers)

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
        if which == "primary":
            primary = new_key()
        else:
            secondary = new_key()
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

    async def get_deployment(self, body: dict, sub: str, rg: str, ws: str, ep: str, dep: str) -> Response:
        endpoint = self._endpoint(sub, rg, ws, ep)
        found = self.store.get(f"{endpoint['id']}/deployments/{dep}")
        if found is None:
            raise rules.not_found(f"Deployment '{dep}' of endpoint '{ep}'")
        return JSONResponse(found)

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
        did = f"{endpoint['id']}/deployments/{dep}"
        existing = self.store.get(did)
        if existing is None:
            rules.check_deployment_count(len(self.store.children("deployment", endpoint["id"])))
        props = body.get("properties") or {}
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
        endpoint = self._endpoint(sub, rg, ws, ep)
        found = self.store.get(f"{endpoint['id']}/deployments/{dep}")
        if found is None:
            raise rules.not_found(f"Deployment '{dep}' of endpoint '{ep}'")
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
        segment = "environments" if kind.lower() == "environments" else "models"
        aid = f"{wid}/{segment}/{name}/versions/{version}"
        existing = self.store.get(aid)
        props = body.get("properties") or {}
        if segment == "environments" and not (props.get("image") or props.get("build")):
            raise rules.bad_request(f"Environment {name}:{version} needs an image or a build context.")
        new = resources.versioned_asset(existing["id"] if existing else aid, segment, version, body, existing)
        self.store.put(segment[:-1], f"{wid}/{segment}/{name}", new)
        return JSONResponse(new, 201 if existing is None else 200)

    async def get_asset(self, body: dict, sub: str, rg: str, ws: str, kind: str, name: str, version: str) -> Response:
        aid = resources.workspace_id(sub, rg, ws) + f"/{kind}/{name}/versions/{version}"
        found = self.store.get(aid)
        if found is None:
            raise rules.not_found(f"{kind[:-1].capitalize()} {name}:{version}")
        return JSONResponse(found)

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

    async def put_autoscale(self, body: dict, sub: str, rg: str, name: str) -> Response:
        bodies.autoscale(body)
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
