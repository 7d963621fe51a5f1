"""The control plane's answer to the gateway's ScoringDirectory protocol.

Views are rebuilt only when state or instance readiness changed (a version counter), so the
gateway can ask per request. Auth: keys compare in constant time; aml_token and aad_token are JWTs
this emulator signed, checked for signature, audience, expiry (and endpoint, for aml_token).
"""

from __future__ import annotations

import hmac

from emulator import resources
from emulator.arm import ControlPlane
from emulator.scoring_directory import DeploymentView, EndpointView
from emulator.tokens import ML_AUDIENCE


class Directory:
    def __init__(self, control: ControlPlane):
        self._cp = control
        self._version = -1
        self._views: dict[str, EndpointView] = {}
        self._keys: dict[str, tuple[str, ...]] = {}  # endpoint keys, refreshed with the views
        self._ids: dict[str, str] = {}

    def _refresh(self) -> None:
        if self._version == self._cp.version:
            return
        version = self._cp.version
        views, keys, ids = {}, {}, {}
        for ep in self._cp.store.all("endpoint"):
            deployments = {}
            for dep in self._cp.store.children("deployment", ep["id"]):
                props = dep["properties"]
                env = self._cp.store.get(props.get("environmentId") or "") or {}
                ready = (self._cp.runtime.ready_urls(dep["id"])
                         if props.get("provisioningState") != "Failed" else ())
                deployments[dep["name"]] = DeploymentView(
                    name=dep["name"],
                    max_concurrent_requests_per_instance=resources.max_concurrency(props),
                    request_timeout_ms=resources.request_timeout_ms(props),
                    instance_count=dep["sku"]["capacity"],
                    ready_instances=ready,
                    scoring_path=resources.route_path(env, "scoringRoute", "/"),
                )
            p = ep["properties"]
            views[ep["name"].lower()] = EndpointView(
                name=ep["name"], auth_mode=p["authMode"], traffic=dict(p["traffic"]),
                mirror_traffic=dict(p["mirrorTraffic"]), deployments=deployments,
            )
            keys[ep["name"].lower()] = self._cp.store.keys(ep["id"]) or ()
            ids[ep["name"].lower()] = ep["id"]
        self._views, self._keys, self._ids, self._version = views, keys, ids, version

    def endpoint(self, name: str) -> EndpointView | None:
        self._refresh()
        return self._views.get(name.lower())

    def authorize(self, endpoint: str, bearer: str) -> bool:
        view = self.endpoint(endpoint)
        if view is None or not bearer:
            return False
        endpoint_id = self._ids[endpoint.lower()]
        issuer = self._cp.issuer
        if view.auth_mode == "Key":
            presented = bearer.encode()
            return any(hmac.compare_digest(presented, k.encode()) for k in self._keys[endpoint.lower()])
        if view.auth_mode == "AMLToken":
            return issuer.verify_aml_token(bearer, endpoint_id)
        return issuer.verify(bearer, {ML_AUDIENCE}) is not None
