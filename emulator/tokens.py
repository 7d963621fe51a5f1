"""The emulator as token issuer: JWTs for ARM, monitor and aad_token scoring; aml_tokens; endpoint keys.

Audiences follow the scope a client asks for, as Entra ID's do, so a management token cannot score
and a scoring token cannot manage. The signing key and the client secret live in the state dir (0600).
"""

from __future__ import annotations

import hmac
import secrets
import time
import uuid

import jwt

from emulator.layout import StateDir, write_private

ML_AUDIENCE = "https://ml.azure.com"
MANAGEMENT_AUDIENCE = "https://management.azure.com"
AML_TOKEN_AUDIENCE = "azureml://aml-token"
ISSUER = "https://r1-emulator.local/"
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
        self._client_secret = _secret(state.client_secret, 32)
        self.arm_url = arm_url.rstrip("/")

    @property
    def management_audiences(self) -> frozenset[str]:
        return frozenset({self.arm_url, MANAGEMENT_AUDIENCE})

    def check_client_secret(self, presented: str | None) -> bool:
        return presented is not None and hmac.compare_digest(presented.encode(), self._client_secret)

    def issue(self, scope: str, lifetime_seconds: int = 3600, **claims) -> tuple[str, int]:
        """A signed token for ``scope``; only the audiences this emulator serves are issued."""
        audience = audience_for_scope(scope)
        if audience not in self.management_audiences | {ML_AUDIENCE}:
            raise TokenError(f"scope {scope!r} is not served by this emulator")
        return self._sign(audience, lifetime_seconds, claims)

    def issue_aml_token(self, endpoint_id: str, lifetime_seconds: int) -> tuple[str, int]:
        return self._sign(AML_TOKEN_AUDIENCE, lifetime_seconds, {"endpoint": endpoint_id.lower()})

    def _sign(self, audience: str, lifetime_seconds: int, claims: dict) -> tuple[str, int]:
        if not 0 <= lifetime_seconds <= MAX_LIFETIME_SECONDS:
            raise TokenError(f"lifetime_seconds must be within 0-{MAX_LIFETIME_SECONDS}")
        now = int(time.time())
        expires = now + lifetime_seconds
        payload = {
            "iss": ISSUER, "aud": audience, "iat": now, "nbf": now - 1, "exp": expires,
            "jti": uuid.uuid4().hex, "oid": "00000000-0000-0000-0000-00000000e1e1", **claims,
        }
        return jwt.encode(payload, self._key, algorithm=ALGORITHM), expires

    def verify(self, token: str, audiences: frozenset[str] | set[str]) -> dict | None:
        """The claims if signature, issuer, audience and expiry hold; otherwise None."""
        try:
            return jwt.decode(
                token, self._key, algorithms=[ALGORITHM], audience=list(audiences), issuer=ISSUER,
                options={"require": ["exp", "aud", "iss"]},
            )
        except jwt.PyJWTError:
            return None

    def verify_aml_token(self, token: str, endpoint_id: str) -> bool:
        claims = self.verify(token, {AML_TOKEN_AUDIENCE})
        return claims is not None and claims.get("endpoint") == endpoint_id.lower()
