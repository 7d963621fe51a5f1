"""The emulator as an Entra ID tenant, for MSAL (azure-identity's ClientSecretCredential,
EnvironmentCredential, DefaultAzureCredential with ``authority=`` the emulator's ARM URL and
``disable_instance_discovery=True``). Two routes, as MSAL calls them:

- ``GET /{tenant}/v2.0/.well-known/openid-configuration``: the tenant's endpoints (https, tenant first).
- ``POST /{tenant}/oauth2/v2.0/token``, form ``grant_type=client_credentials``, ``client_id``,
  ``client_secret``, ``scope``: ``{"token_type", "expires_in", "ext_expires_in", "access_token"}``,
  or Entra's error body (``error``, ``error_description`` starting with ``AADSTS<code>:``, ``error_codes``).
"""

from __future__ import annotations

import datetime
import logging
import time
import uuid
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from emulator.identity import IdentityError
from emulator.tokens import Issuer, TokenError

log = logging.getLogger(__name__)
TOKEN_LIFETIME_SECONDS = 3600
_MAX_FORM_BYTES = 64 * 1024
# MSAL may add these to any request; they ask for nothing a client-credentials token carries.
_RESERVED_SCOPES = {"openid", "profile", "offline_access"}


def _error(err: IdentityError) -> Response:
    trace, correlation = str(uuid.uuid4()), str(uuid.uuid4())
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    return JSONResponse({
        "error": err.error,
        "error_description": f"{err.description}\r\nTrace ID: {trace}\r\nCorrelation ID: {correlation}\r\nTimestamp: {now}",
        "error_codes": [err.code], "timestamp": now, "trace_id": trace, "correlation_id": correlation,
        "error_uri": f"https://login.microsoftonline.com/error?code={err.code}",
    }, err.status)


def entra_routes(issuer: Issuer) -> list[Route]:
    def known_tenant(tenant: str) -> None:
        if tenant.lower() != issuer.tenant.tenant_id.lower():
            raise IdentityError("invalid_tenant", 90002,
                                f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID "
                                "and are signing into the correct cloud.")

    async def openid_configuration(request: Request) -> Response:
        tenant = request.path_params["tenant"]
        try:
            known_tenant(tenant)
        except IdentityError as err:
            return _error(err)
        base = f"{issuer.arm_url}/{issuer.tenant.tenant_id}"
        return JSONResponse({
            "issuer": issuer.issuer,
            "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
            "token_endpoint": f"{base}/oauth2/v2.0/token",
            "jwks_uri": f"{base}/discovery/v2.0/keys",
            "token_endpoint_auth_methods_supported": ["client_secret_post"],
            "response_types_supported": ["code"],
            "grant_types_supported": ["client_credentials"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "tenant_region_scope": "EU",
        })

    async def token(request: Request) -> Response:
        raw = await request.body()
        try:
            if len(raw) > _MAX_FORM_BYTES:
                raise IdentityError("invalid_request", 90014, "The request body is too large.")
            form = dict(parse_qsl(raw.decode("utf-8", "replace")))
            tenant = request.path_params["tenant"]
            grant = form.get("grant_type", "")
            if not grant:
                raise IdentityError("invalid_request", 900144,
                                    "The request body must contain the following parameter: 'grant_type'.")
            if grant != "client_credentials":
                raise IdentityError("unsupported_grant_type", 70003,
                                    f"The app requested an unsupported grant type '{grant}'.")
            # an unknown tenant is invalid_request (AADSTS90002), a wrong secret invalid_client (AADSTS7000215)
            principal = issuer.tenant.authenticate(tenant, form.get("client_id", ""), form.get("client_secret"))
            scopes = [s for s in form.get("scope", "").split() if s not in _RESERVED_SCOPES]
            if len(scopes) != 1:
                raise IdentityError("invalid_scope", 70011,
                                    "The provided request must include a 'scope' input parameter. The provided value "
                                    f"for the input parameter 'scope' is not valid. The scope {form.get('scope', '')} "
                                    "is not valid.")
            try:
                value, expires = issuer.issue(scopes[0], TOKEN_LIFETIME_SECONDS, principal=principal)
            except TokenError:
                raise IdentityError("invalid_scope", 70011,
                                    "The provided value for the input parameter 'scope' is not valid. The scope "
                                    f"{scopes[0]} is not valid.") from None
        except IdentityError as err:
            log.info("token refused: %s", err.error)  # never the form: it holds the client secret
            return _error(err)
        lifetime = max(0, expires - int(time.time()))
        return JSONResponse({"token_type": "Bearer", "expires_in": lifetime, "ext_expires_in": lifetime,
                             "access_token": value})

    return [
        Route("/{tenant}/v2.0/.well-known/openid-configuration", openid_configuration, methods=["GET"]),
        Route("/{tenant}/oauth2/v2.0/token", token, methods=["POST"]),
    ]
