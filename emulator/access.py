"""ARM's front door: authentication (401 with ``WWW-Authenticate``), then Azure RBAC (403
``AuthorizationFailed``), before a request reaches a handler, a fault or a rule; and the caller's
permissions (``GET {scope}/providers/Microsoft.Authorization/permissions``)."""

from __future__ import annotations

import re

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from emulator import api_versions
from emulator.identity import action_for
from emulator.rules import ArmError
from emulator.tokens import Issuer

_PERMISSIONS = re.compile(r"^(?P<scope>/.*)/providers/microsoft\.authorization/permissions$", re.IGNORECASE)
# Operation polls (mfeOperationsStatus/Results) live at the subscription under locations/; their URLs
# are handed out by a call that was authorized, so a valid token is enough (as for ARM's own polls).
_LOCATION_READ = re.compile(r"^/subscriptions/[^/]+/providers/[^/]+/locations/", re.IGNORECASE)


def _path(request: Request) -> str:
    return "/" + "/".join(p for p in request.url.path.split("/") if p)  # the SDK may send '//' (empty parent path)


def _unauthenticated(issuer: Issuer) -> Response:
    message = "The access token is missing, invalid, expired or for another audience."
    challenge = (f'Bearer authorization_uri="{issuer.arm_url}/{issuer.tenant.tenant_id}", error="invalid_token", '
                 f'error_description="{message}"')
    return JSONResponse({"error": {"code": "InvalidAuthenticationToken", "message": message}}, 401,
                        headers={"WWW-Authenticate": challenge})


def forbidden(object_id: str, action: str, scope: str) -> Response:
    message = (f"The client '{object_id}' with object id '{object_id}' does not have authorization to perform "
               f"action '{action}' over scope '{scope}' or the scope is invalid. If access was recently granted, "
               "please refresh your credentials.")
    return JSONResponse({"error": {"code": "AuthorizationFailed", "message": message}}, 403)


def guard(issuer: Issuer, request: Request) -> Response | None:
    """None if the caller may go on; otherwise the answer (a 401, a 403, or its permissions list)."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    claims = issuer.verify(token, issuer.management_audiences) if scheme.lower() == "bearer" else None
    if claims is None or not isinstance(claims.get("oid"), str):
        return _unauthenticated(issuer)
    object_id, path = claims["oid"], _path(request)
    listing = _PERMISSIONS.match(path)
    if listing and request.method == "GET":
        try:
            api_versions.check(path, request.query_params.get("api-version"))  # the one table, as for the rest
        except ArmError as err:
            return JSONResponse({"error": {"code": err.code, "message": err.message}}, err.status)
        return JSONResponse({"value": issuer.tenant.permissions(object_id, listing["scope"])})
    if request.method == "GET" and _LOCATION_READ.match(path):
        return None
    action, scope = action_for(request.method, path)
    if not issuer.tenant.allowed(object_id, action, scope):
        return forbidden(object_id, action, scope)
    return None
