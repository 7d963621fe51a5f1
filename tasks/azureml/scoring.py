"""Credentials for calling a scoring endpoint, whatever its auth mode, as a refreshing SecretStr provider.

The SDK's ``online_endpoints.get_keys`` returns keys (key mode), an AML token (aml_token) or an AAD token
(aad_token, from the caller's own credential). All three become one callable that hands out a bearer
value as ``SecretStr`` and refreshes tokens before they expire, so load tests longer than a token's life
keep working and nothing downstream ever holds a plain string.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from pydantic import SecretStr

BearerProvider = Callable[[], SecretStr]
# Azure ML routes a scoring request to the deployment this header names, and names the one that served it.
DEPLOYMENT_HEADER = "azureml-model-deployment"
REFRESH_MARGIN_S = 120.0


def _secret_and_expiry(creds: Any) -> tuple[SecretStr, float | None]:
    """(bearer, expiry epoch or None for keys) from any of the SDK's three credential entities."""
    if getattr(creds, "primary_key", None):
        return SecretStr(creds.primary_key), None
    token = getattr(creds, "access_token", None)
    if not token:
        raise ValueError("the endpoint returned no key or token")
    expiry = getattr(creds, "expiry_time_utc", None)
    return SecretStr(token), float(expiry) if expiry else None


def scoring_bearer(fetch: Callable[[], Any], clock: Callable[[], float] = time.time) -> BearerProvider:
    """Wrap ``fetch`` (e.g. ``lambda: ml.online_endpoints.get_keys(name)``) in a thread-safe cache."""
    lock = threading.Lock()
    cached: dict[str, Any] = {}

    def provider() -> SecretStr:
        with lock:
            expiry = cached.get("expiry")
            if "secret" not in cached or (expiry is not None and clock() > expiry - REFRESH_MARGIN_S):
                cached["secret"], cached["expiry"] = _secret_and_expiry(fetch())
            return cached["secret"]

    return provider
