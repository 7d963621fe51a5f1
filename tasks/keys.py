"""Key rotation for key-auth endpoints: regenerate the key clients are not using, prove it scores, then the other.

Azure keeps two keys so one can change while clients hold the other. The project's own clients score with
the primary key (``tasks.azureml.scoring``) and fetch it again on a 401, so the secondary goes first: after it
is regenerated and verified, consumers have a grace period to move to it before the primary changes too.
Key values stay ``SecretStr`` and are compared by hash; no message built here quotes one (an SDK error's
text could: only its type and HTTP status are kept).
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass, replace
from typing import Any

from azure.core.exceptions import AzureError, HttpResponseError
from pydantic import SecretStr

from tasks.loadtest.client import Destination, run_load
from tasks.loadtest.spec import LoadSpec
from tasks.settings import Settings

ORDER = ("secondary", "primary")  # the key clients are not using first
VERIFY_REQUESTS = 2


class KeyRotationFailed(RuntimeError):
    """A key could not be regenerated, did not change, or does not score: exit 1 (keys already changed stay changed)."""

    report_dir: str | None = None


@dataclass(frozen=True)
class Rotated:
    """What rotating one key did (no key values: whether it changed, and how scoring with it went)."""

    key: str
    changed: bool
    verified: int  # scoring requests with the new key that succeeded
    detail: str

    def row(self) -> dict[str, Any]:
        return {"key": self.key, "changed": self.changed, "verified requests": self.verified, "detail": self.detail}


def no_keys(auth_mode: str | None) -> str | None:
    """Why there is nothing to rotate (token auth modes), or None for a key-auth endpoint."""
    if (auth_mode or "").lower() == "key":
        return None
    return (f"auth mode {auth_mode}: no long-lived keys to rotate (clients get short-lived tokens, which "
            "expire on their own)")


def digest(secret: SecretStr) -> str:
    return hashlib.sha256(secret.get_secret_value().encode()).hexdigest()


def read_key(ml: Any, endpoint: str, which: str) -> SecretStr:
    keys = ml.online_endpoints.get_keys(endpoint)
    return SecretStr(getattr(keys, f"{which}_key") or "")


def _why(err: Exception) -> str:
    status = getattr(err, "status_code", None) if isinstance(err, HttpResponseError) else None
    return type(err).__name__ + (f" (HTTP {status})" if status else "")


def regenerate(ml: Any, endpoint: str, which: str) -> SecretStr:
    """Regenerate ``which`` key and return the new value; it must differ from the old one."""
    try:
        before = digest(read_key(ml, endpoint, which))
        ml.online_endpoints.begin_regenerate_keys(name=endpoint, key_type=which).result()
        after = read_key(ml, endpoint, which)
    except AzureError as err:
        raise KeyRotationFailed(f"regenerating the {which} key of {endpoint} failed: {_why(err)}") from None
    if digest(after) == before:
        raise KeyRotationFailed(f"the {which} key of {endpoint} did not change when regenerated")
    return after


def verify_spec(s: Settings) -> LoadSpec:
    """A few real chat completions through the gateway: small answers, the rollout's timeout."""
    return LoadSpec(concurrency=1, requests=VERIFY_REQUESTS, max_tokens=s.load_gate.max_tokens, model=s.model_id,
                    timeout_s=s.request_timeout_ms / 1000)


def verify(dest: Destination, key: SecretStr, which: str, spec: LoadSpec) -> Rotated:
    """Score with exactly ``key`` (no refresh); every request must succeed."""
    run = asyncio.run(run_load(replace(dest, auth=key, deployment=None), spec))
    ok = sum(1 for r in run.records if r.ok)
    if ok < len(run.records) or not run.records:
        errors = sorted({r.error or "?" for r in run.records if not r.ok})
        raise KeyRotationFailed(f"the new {which} key was regenerated but scoring with it failed: "
                                f"{len(run.records) - ok} of {len(run.records)} request(s) ({', '.join(errors)})")
    return Rotated(which, True, ok, f"regenerated; {ok} scoring request(s) with it succeeded")
