"""The tracked base's digest, read from its upstream registry before the import (Docker Registry HTTP API v2, the
OCI distribution spec): ACR's ``importImage`` answers with no digest, and importing the digest read here pins
exactly what was checked. Anonymous pulls only; the bearer token is a credential: never logged, never raised.
"""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass

import httpx

DOCKER_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"})
DOCKER_HUB_API = "https://registry-1.docker.io"
MANIFEST_TYPES = ", ".join((
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
))
_PARAM = re.compile(r'([A-Za-z][A-Za-z0-9_-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,"]+))')
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


class NotUpstream(LookupError):
    """The upstream does not serve ``repository:tag`` to an anonymous pull; the message says what it answered."""


class UpstreamRegistryError(RuntimeError):
    """The upstream registry answered something a registry should not (an outage, a broken proxy): not a refusal."""


@dataclass(frozen=True)
class Challenge:
    """A ``WWW-Authenticate: Bearer`` challenge: where to ask for a token, and for what."""

    realm: str
    service: str | None
    scope: str | None


def bearer_challenge(header: str | None) -> Challenge | None:
    """The Bearer challenge in ``header``; None for another scheme or a challenge without a realm."""
    scheme, _, params = (header or "").strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    found = {m[1].lower(): (m[2].replace('\\"', '"') if m[2] is not None else m[3]) for m in _PARAM.finditer(params)}
    realm = found.get("realm")
    return Challenge(realm, found.get("service"), found.get("scope")) if realm else None


def api_repository(registry: str, repository: str) -> str:
    """The repository's name on the registry API: Docker Hub's official images live under ``library/``."""
    return f"library/{repository}" if registry.lower() in DOCKER_HUB_ALIASES and "/" not in repository else repository


def _token(client: httpx.Client, challenge: Challenge) -> str:
    """An anonymous pull token for the challenge (``token``, or OAuth2's ``access_token``)."""
    params = {k: v for k, v in (("service", challenge.service), ("scope", challenge.scope)) if v}
    answer = client.get(challenge.realm, params=params)
    if answer.status_code != 200:
        raise UpstreamRegistryError(f"the token service {challenge.realm} answered {answer.status_code}")
    try:
        body = answer.json()
    except ValueError:
        body = None
    token = (body.get("token") or body.get("access_token")) if isinstance(body, dict) else None
    if not isinstance(token, str) or not token:
        raise UpstreamRegistryError(f"the token service {challenge.realm} answered no token")
    return token


def upstream_digest(base_url: str, repository: str, tag: str, verify: ssl.SSLContext | str | bool,
                    timeout: float = 30) -> str:
    """The digest ``repository:tag`` points at on the registry at ``base_url`` (its manifest list / index when
    multi-platform: what ``importImage`` copies). NotUpstream for a tag or repository the upstream does not serve."""
    url = f"{base_url.rstrip('/')}/v2/{repository}/manifests/{tag}"
    context = ssl.create_default_context(cafile=verify) if isinstance(verify, str) else verify
    headers = {"Accept": MANIFEST_TYPES}
    with httpx.Client(verify=context, timeout=timeout, follow_redirects=True) as client:
        answer = client.head(url, headers=headers)
        challenge = bearer_challenge(answer.headers.get("www-authenticate")) if answer.status_code == 401 else None
        if challenge:
            answer = client.head(url, headers={**headers, "Authorization": f"Bearer {_token(client, challenge)}"})
    if answer.status_code == 404:
        raise NotUpstream(f"no such tag upstream ({url} answered 404)")
    if answer.status_code in (401, 403):  # Docker Hub answers an unknown repository so, even with a token
        raise NotUpstream(f"no such repository upstream, or it is not public ({url} answered {answer.status_code})")
    if answer.status_code != 200:
        raise UpstreamRegistryError(f"{url} answered {answer.status_code}")
    digest = answer.headers.get("docker-content-digest", "")
    if not _DIGEST.match(digest):
        raise UpstreamRegistryError(f"{url} answered no sha256 Docker-Content-Digest")
    return digest
