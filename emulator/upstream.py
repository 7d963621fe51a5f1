"""The public registries ``importImage`` copies from: tags -> digests, so a redeploy can see a patched release.

Docker Hub's ``vllm/vllm-openai`` and the fake engine's base ``r1emulator/fake-vllm-openai`` are seeded with
the digests the project pins (tasks/settings.py DEFAULT_BASE_IMAGE, tests/rollout_support.py FAKE_BASE);
the admin route ``POST /_emulator/upstream`` publishes a new digest for a tag, as a patched upstream release
does. Tags are rows of kind ``upstream`` in the resources table, so they survive a restart. Only repositories
the builder can run (``emulator.builder.BASE_ENGINES``) exist upstream: an imported base must build.
"""

from __future__ import annotations

import re

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
        """(repository, tag, digest) of ``source_image`` on ``registry_uri``; UpstreamError if not held."""
        if registry_uri.strip().lower().rstrip("/").removeprefix("https://") not in HUB_ALIASES:
            raise UpstreamError(f"registry '{registry_uri}' is not reachable from this registry "
                                f"(the emulator's upstream is {DOCKER_HUB})")
        repo, tag = parse(source_image)
        found = self.store.get(self._id(repo, tag))
        if found is None:
            raise UpstreamError(f"manifest for {DOCKER_HUB}/{repo}:{tag} not found: manifest unknown")
        return repo, tag, found["properties"]["digest"]

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
