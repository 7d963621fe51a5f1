"""Credentials for calling a scoring endpoint, whatever its auth mode, as a refreshing SecretStr provider.

The SDK's ``online_endpoints.get_keys`` returns keys (key mode), an AML token (aml_token) or an AAD token
(aad_token, from the caller's own credential). All three become one callable that hands out a bearer
value as ``SecretStr`` and refreshes tokens before they expire, so load tests longer than a token's life
keep working and nothing downstream ever holds a plain string. Keys never expire but can be regenerated
(``rotate-keys``): a caller that meets a 401 asks ``refresh`` for the current value and retries once.
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


class ScoringBearer:
    """A thread-safe cache around ``fetch``: call it for the bearer; ``refresh(rejected)`` after a 401."""

    def __init__(self, fetch: Callable[[], Any], clock: Callable[[], float] = time.time):
        self._fetch, self._clock, self._lock = fetch, clock, threading.Lock()
        self._secret: SecretStr | None = None
        self._expiry: float | None = None
        self.refreshes = 0  # values fetched again because the endpoint rejected the cached one

    def __repr__(self) -> str:  # never the value
        return f"ScoringBearer(refreshes={self.refreshes})"

    def __call__(self) -> SecretStr:
        with self._lock:
            if self._secret is None or (self._expiry is not None and self._clock() > self._expiry - REFRESH_MARGIN_S):
                self._secret, self._expiry = _secret_and_expiry(self._fetch())
            return self._secret

    def refresh(self, rejected: SecretStr) -> SecretStr:
        """The current value after ``rejected`` was refused: fetched again unless another caller already
        replaced it (a burst of 401s after a key rotation costs one ``get_keys``, not one per request)."""
        with self._lock:
            if self._secret is None or self._secret.get_secret_value() == rejected.get_secret_value():
                self._secret, self._expiry = _secret_and_expiry(self._fetch())
                self.refreshes += 1
            return self._secret


def scoring_bearer(fetch: Callable[[], Any], clock: Callable[[], float] = time.time) -> ScoringBearer:
    """Wrap ``fetch`` (e.g. ``lambda: ml.online_endpoints.get_keys(name)``) in a thread-safe, refreshable cache."""
    return ScoringBearer(fetch, clock)
