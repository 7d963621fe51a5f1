"""The public registries ``importImage`` copies from: tags -> digests, so a redeploy can see a patched release.

Docker Hub's ``vllm/vllm-openai`` and the fake engine's base ``r1emulator/fake-vllm-openai`` are seeded with
the digests the project pins (tasks/settings.py DEFAULT_BASE_IMAGE, tests/rollout_support.py FAKE_BASE);
the admin route ``POST /_emulator/upstream`` publishes a new digest for a tag, as a patched upstream release
does. The registry API serves them on the ARM listener (``/v2/``, anonymous Bearer tokens from ``/v2/token``), as
Docker Hub does: how a client learns a tag's digest before importing it by digest (``importImage`` answers none).
Tags are rows of kind ``upstream`` in the resources table, so they survive a restart. Only repositories
the builder can run (``emulator.builder.BASE_ENGINES``) exist upstream: an imported base must build.
"""

from __future__ import annotations

import re
import secrets
import time

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from emulator import resources
from emulator.builder import BASE_ENGINES
from emulator.store import Store

KIND = "upstream"
SCOPE = "/_emulator/upstream"  # the rows' parent; not an ARM id (no ARM route reads it)
DOCKER_HUB = "docker.io"
HUB_ALIASES = frozenset({"docker.io", "registry.hub.docker.com", "registry-1.docker.io", "index.docker.io"})
SEED = {
    ("vllm/vllm-openai", "v0.8.5"): "sha256:0a51ea5b4ae2dc5d81890e5173f54203d2a3ae0cfffe51b8fd2afd4391bfd967",
    ("r1emulator/fake-vllm-openai", "v1"): "sha256:23078e0b29a648ff54da3b78fc10b23cf829192db3ed7a275e055d0261499dac",
}
_TAGGED = re.compile(r"^(?P<repo>[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*)"
                     r":(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})$")
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
SERVICE = "r1emulator"  # the token service the registry API's challenges name
TOKEN_LIFETIME_S = 300
MANIFEST_TYPE = "application/vnd.docker.distribution.manifest.v2+json"


class UpstreamError(ValueError):
    """A reference the upstream does not hold or cannot hold; the message says which."""


def parse(source_image: str) -> tuple[str, str]:
    """``[docker.io/]repository:tag`` -> (repository, tag); Docker Hub's ``library/`` is implied for one segment."""
    name = source_image.strip()
    host, _, rest = name.partition("/")
    if rest and host.lower() in HUB_ALIASES:
        name = rest
    match = _TAGGED.match(name)
    if not match:
        raise UpstreamError(f"'{source_image}' is not repository:tag")
    repo = match["repo"] if "/" in match["repo"] else f"library/{match['repo']}"
    return repo, match["tag"]


def parse_reference(source_image: str) -> tuple[str, str | None, str | None]:
    """``[docker.io/]repository:tag`` or ``[docker.io/]repository@sha256:..`` -> (repository, tag, digest)."""
    name, at, digest = source_image.strip().partition("@")
    if not at:
        return *parse(name), None
    if not DIGEST.match(digest):
        raise UpstreamError(f"'{source_image}' names no sha256 digest")
    repo, _ = parse(f"{name}:latest")  # the same name rules; the tag is not looked at
    return repo, None, digest


def stored(body: dict) -> None:
    """``ValueError`` unless ``body`` is an upstream tag row (emulator/integrity.py)."""
    props = body["properties"]
    if not (isinstance(props.get("repository"), str) and isinstance(props.get("tag"), str)
            and isinstance(props.get("digest"), str) and DIGEST.match(props["digest"])):
        raise ValueError("properties are not an upstream tag's (repository, tag, sha256 digest)")


class Upstream:
    """Docker Hub as the emulator knows it: the tags it holds and their digests."""

    def __init__(self, store: Store):
        self.store = store
        self._tokens: dict[str, float] = {}  # registry API bearer tokens -> expiry (monotonic); in memory only
        for (repo, tag), digest in SEED.items():
            if store.get(self._id(repo, tag)) is None:
                self._put(repo, tag, digest)

    @staticmethod
    def _id(repo: str, tag: str) -> str:
        return f"{SCOPE}/{DOCKER_HUB}/{repo}:{tag}"

    def _put(self, repo: str, tag: str, digest: str) -> dict:
        body = {"id": self._id(repo, tag), "name": f"{repo}:{tag}",
                "properties": {"registry": DOCKER_HUB, "repository": repo, "tag": tag, "digest": digest,
                               "publishedAt": resources.now_iso()}}
        self.store.put(KIND, SCOPE, body)
        return body

    def resolve(self, registry_uri: str, source_image: str) -> tuple[str, str, str]:
        """(repository, tag, digest) of ``source_image`` (by tag, or by a digest some tag of it points at) on
        ``registry_uri``; UpstreamError if not held."""
        if registry_uri.strip().lower().rstrip("/").removeprefix("https://") not in HUB_ALIASES:
            raise UpstreamError(f"registry '{registry_uri}' is not reachable from this registry "
                                f"(the emulator's upstream is {DOCKER_HUB})")
        repo, tag, digest = parse_reference(source_image)
        found = self.manifest(repo, tag or digest or "")
        if found is None:
            raise UpstreamError(f"manifest for {DOCKER_HUB}/{repo}{':' + tag if tag else '@' + str(digest)} "
                                "not found: manifest unknown")
        return repo, found["tag"], found["digest"]

    def manifest(self, repo: str, reference: str) -> dict | None:
        """The tag row's properties ``reference`` (a tag, or a digest some tag points at) names in ``repo``."""
        if not DIGEST.match(reference):
            found = self.store.get(self._id(repo, reference))
            return found["properties"] if found else None
        return next((t for t in self.tags() if t["repository"] == repo and t["digest"] == reference), None)

    def publish(self, reference: str, digest: str) -> dict:
        """Point ``repository:tag`` at ``digest`` (a new tag or a patched release of an existing one)."""
        if not isinstance(digest, str) or not DIGEST.match(digest):
            raise UpstreamError(f"digest must be sha256:<64 hex>, got {digest!r}")
        repo, tag = parse(reference)
        if repo not in BASE_ENGINES:
            raise UpstreamError(f"repository {repo} cannot be published here: the builder runs only "
                                f"{sorted(BASE_ENGINES)}")
        return self._put(repo, tag, digest)["properties"]

    def tags(self) -> list[dict]:
        return [row["properties"] for row in self.store.children(KIND, SCOPE)]

    # ---- the registry API (Docker Registry HTTP API v2), anonymous pulls with Bearer tokens -------------

    def routes(self) -> list[Route]:
        """``/v2/``, ``/v2/token`` and ``/v2/<repository>/manifests/<reference>`` (GET, and HEAD with it)."""
        return [Route("/v2/", self.api_root, methods=["GET"]),
                Route("/v2/token", self.token, methods=["GET"]),
                Route("/v2/{repo:path}/manifests/{reference}", self.get_manifest, methods=["GET"])]

    def _authorized(self, request: Request) -> bool:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        now = time.monotonic()
        self._tokens = {t: expiry for t, expiry in self._tokens.items() if expiry > now}
        return scheme.lower() == "bearer" and token in self._tokens

    @staticmethod
    def _error(status: int, code: str, message: str, detail: object = None,
               headers: dict[str, str] | None = None) -> Response:
        return JSONResponse({"errors": [{"code": code, "message": message, "detail": detail}]}, status, headers)

    def _challenge(self, request: Request, scope: str | None = None) -> Response:
        realm = f"{str(request.base_url).rstrip('/')}/v2/token"
        header = f'Bearer realm="{realm}",service="{SERVICE}"' + (f',scope="{scope}"' if scope else "")
        return self._error(401, "UNAUTHORIZED", "authentication required",
                           [{"Type": "repository", "Name": scope.split(":")[1], "Action": "pull"}] if scope else None,
                           {"WWW-Authenticate": header})

    async def api_root(self, request: Request) -> Response:
        return JSONResponse({}) if self._authorized(request) else self._challenge(request)

    async def token(self, request: Request) -> Response:
        """Any anonymous pull is granted: the upstream is public."""
        token = secrets.token_urlsafe(32)
        self._tokens[token] = time.monotonic() + TOKEN_LIFETIME_S
        return JSONResponse({"token": token, "access_token": token, "expires_in": TOKEN_LIFETIME_S,
                             "issued_at": resources.now_iso()})

    async def get_manifest(self, request: Request) -> Response:
        repo, reference = request.path_params["repo"], request.path_params["reference"]
        if not self._authorized(request):
            return self._challenge(request, f"repository:{repo}:pull")
        found = self.manifest(repo, reference)
        if found is None:
            known = any(t["repository"] == repo for t in self.tags())
            return self._error(404, "MANIFEST_UNKNOWN" if known else "NAME_UNKNOWN",
                               "manifest unknown" if known else "repository name not known to registry",
                               {"Name": repo, "Revision": reference} if known else {"name": repo})
        body = {"schemaVersion": 2, "mediaType": MANIFEST_TYPE, "layers": [],
                "annotations": {"org.opencontainers.image.ref.name": found["tag"]}}
        return JSONResponse(body, headers={"Docker-Content-Digest": found["digest"], "Content-Type": MANIFEST_TYPE})
