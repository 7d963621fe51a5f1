"""The emulator as token issuer: JWTs for ARM, monitor and aad_token scoring; aml_tokens; endpoint keys.

Audiences follow the scope a client asks for, as Entra ID's do, so a management token cannot score
and a scoring token cannot manage. Tokens name their principal (``oid``, ``appid``) and tenant
(``tid``); ``iss`` is the tenant's v2.0 issuer on this emulator. The signing key and the default
principal's client secret live in the state dir (0600); the tenant is ``emulator.identity``.
"""

from __future__ import annotations

import hmac
import secrets
import time
import uuid

import jwt

from emulator.identity import Principal, Tenant
from emulator.layout import StateDir, write_private

ML_AUDIENCE = "https://ml.azure.com"
MANAGEMENT_AUDIENCE = "https://management.azure.com"
AML_TOKEN_AUDIENCE = "azureml://aml-token"
ALGORITHM = "HS256"
MAX_LIFETIME_SECONDS = 86_400


class TokenError(ValueError):
    """A token request the issuer refuses (bad secret, unknown scope, bad lifetime)."""


def _secret(path, nbytes: int) -> bytes:
    if not path.exists():
        write_private(path, secrets.token_urlsafe(nbytes).encode())
    return path.read_bytes().strip()


def new_key() -> str:
    """An endpoint key: 256 random bits, URL-safe."""
    return secrets.token_urlsafe(32)


def audience_for_scope(scope: str) -> str:
    """``https://ml.azure.com/.default`` -> ``https://ml.azure.com`` (what Entra ID puts in ``aud``)."""
    return scope.removesuffix("/.default").rstrip("/")


class Issuer:
    def __init__(self, state: StateDir, arm_url: str):
        self._key = _secret(state.signing_key, 48)
        self.tenant = Tenant(state)  # creates the default principal and its secret on first start
        self._client_secret = state.client_secret.read_bytes().strip()
        self.arm_url = arm_url.rstrip("/")

    @property
    def issuer(self) -> str:
        """The tenant's issuer, as in Entra ID's ``https://login.microsoftonline.com/{tenant}/v2.0``."""
        return f"{self.arm_url}/{self.tenant.tenant_id}/v2.0"

    @property
    def management_audiences(self) -> frozenset[str]:
        return frozenset({self.arm_url, MANAGEMENT_AUDIENCE})

    def check_client_secret(self, presented: str | None) -> bool:
        """The default principal's secret (what the loopback admin routes take)."""
        return presented is not None and hmac.compare_digest(presented.encode(), self._client_secret)

    def issue(self, scope: str, lifetime_seconds: int = 3600, principal: Principal | None = None,
              **claims) -> tuple[str, int]:
        """A signed token for ``scope`` naming ``principal`` (default: the default principal); only the
        audiences this emulator serves are issued."""
        audience = audience_for_scope(scope)
        if audience not in self.management_audiences | {ML_AUDIENCE}:
            raise TokenError(f"scope {scope!r} is not served by this emulator")
        who = principal or self.tenant.default_principal
        return self._sign(audience, lifetime_seconds, {
            "oid": who.object_id, "sub": who.object_id, "appid": who.client_id, "azp": who.client_id,
            "tid": self.tenant.tenant_id, "idtyp": "app", **claims})

    def issue_aml_token(self, endpoint_id: str, lifetime_seconds: int) -> tuple[str, int]:
        return self._sign(AML_TOKEN_AUDIENCE, lifetime_seconds, {"endpoint": endpoint_id.lower()})

    def _sign(self, audience: str, lifetime_seconds: int, claims: dict) -> tuple[str, int]:
        if not 0 <= lifetime_seconds <= MAX_LIFETIME_SECONDS:
            raise TokenError(f"lifetime_seconds must be within 0-{MAX_LIFETIME_SECONDS}")
        now = int(time.time())
        expires = now + lifetime_seconds
        payload = {
            "iss": self.issuer, "aud": audience, "iat": now, "nbf": now - 1, "exp": expires,
            "jti": uuid.uuid4().hex, **claims,
        }
        return jwt.encode(payload, self._key, algorithm=ALGORITHM), expires

    def verify(self, token: str, audiences: frozenset[str] | set[str]) -> dict | None:
        """The claims if signature, issuer, audience and expiry hold; otherwise None."""
        try:
            return jwt.decode(
                token, self._key, algorithms=[ALGORITHM], audience=list(audiences), issuer=self.issuer,
                options={"require": ["exp", "aud", "iss"]},
            )
        except jwt.PyJWTError:
            return None

    def verify_aml_token(self, token: str, endpoint_id: str) -> bool:
        claims = self.verify(token, {AML_TOKEN_AUDIENCE})
        return claims is not None and claims.get("endpoint") == endpoint_id.lower()
