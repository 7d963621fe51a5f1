"""What a redeploy compares: the serving deployment's recorded inputs against what is current now.

The serving colour records the pinned image it runs (``r1-image``) and the model asset (``r1-model``); the
``r1-vllm`` environment version registered for that image records the base it was built FROM
(``base_image``). Now: the digest ``R1_UPSTREAM_BASE``'s tag points at in its upstream registry (read with the
registry API, tasks/redeploy/upstream_registry.py), and the newest version of ``R1_MODEL_ASSET``'s name. The
comparisons are pure; the reads are thin calls.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

import httpx
from azure.core.exceptions import ResourceNotFoundError

from tasks import clients
from tasks.azureml.endpoint import read_live_state
from tasks.cli import InputError
from tasks.plan.specs import ENVIRONMENT_NAME
from tasks.redeploy.upstream_registry import NotUpstream, UpstreamRegistryError, api_repository, upstream_digest
from tasks.rollout.tags import IMAGE_TAG, MODEL_TAG
from tasks.settings import Settings

DOCKER_HUB = "docker.io"
_COMPONENT = r"[a-z0-9]+(?:[._-][a-z0-9]+)*"
_REPOSITORY = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}$")


@dataclass(frozen=True)
class UpstreamBase:
    """``R1_UPSTREAM_BASE`` parsed: where to import from, and the name it keeps in the workspace registry."""

    registry: str
    repository: str
    tag: str

    @property
    def reference(self) -> str:
        return f"{self.repository}:{self.tag}"


@dataclass(frozen=True)
class Serving:
    """What the serving colour was built and deployed from (None: not recorded)."""

    deployment: str
    image: str | None
    model: str | None
    base_image: str | None


@dataclass(frozen=True)
class InputChange:
    input: str  # "base" | "model"
    old: str | None
    new: str | None
    changed: bool | None  # None: not checked; ``note`` says why
    note: str = ""

    def line(self) -> str:
        verdict = {True: "changed", False: "unchanged", None: "not checked"}[self.changed]
        return f"{self.input}: {self.old or '-'} -> {self.new or '-'} ({verdict}{'; ' + self.note if self.note else ''})"

    def record(self) -> dict[str, Any]:
        return asdict(self)


def upstream_base(value: str) -> UpstreamBase | None:
    """``[registry/]repository:tag`` (Docker Hub when no registry is named); None when empty (not tracked).
    InputError for a digest, a missing tag or a malformed name: redeploy tracks a tag that moves."""
    value = value.strip()
    if not value:
        return None
    if "@" in value:
        raise InputError(f"R1_UPSTREAM_BASE={value!r} is pinned by digest: redeploy tracks a tag "
                         "(repository:tag) and pins the digest it imports")
    first, _, rest = value.partition("/")
    registry, name = (first, rest) if rest and ("." in first or ":" in first or first == "localhost") \
        else (DOCKER_HUB, value)
    repository, colon, tag = name.rpartition(":")
    if not colon or not _TAG.match(tag) or not _REPOSITORY.match(repository):
        raise InputError(f"R1_UPSTREAM_BASE={value!r} is not [registry/]repository:tag "
                         "(e.g. vllm/vllm-openai:v0.8.5)")
    return UpstreamBase(registry.lower(), repository, tag)


def digest_of(image: str | None) -> str | None:
    found = _DIGEST.search(image or "")
    return found.group(0) if found else None


def base_change(serving_base: str | None, imported: str | None, tracked: UpstreamBase | None) -> InputChange:
    """Changed when the imported digest differs from the digest the serving image was built FROM."""
    if tracked is None:
        return InputChange("base", serving_base, None, None, "R1_UPSTREAM_BASE is empty: the base is not tracked")
    old = digest_of(serving_base)
    note = f"{tracked.registry}/{tracked.reference}"
    if old is None:
        note += "; the serving image's base is not recorded (not built by this project)"
    return InputChange("base", serving_base, imported, digest_of(imported) != old, note)


def model_change(serving_model: str | None, latest: str | None, s: Settings) -> InputChange:
    """Changed when a newer version of the model asset's name is registered than the one serving."""
    if s.model_supply != "registered-asset":
        return InputChange("model", serving_model, None, None, f"model supply {s.model_supply}: no asset")
    if latest is None:
        return InputChange("model", serving_model, None, None, f"no version of {asset_name(s)} is registered")
    return InputChange("model", serving_model, latest, latest != serving_model)


def needs_redeploy(changes: list[InputChange]) -> bool:
    return any(c.changed for c in changes)


def asset_name(s: Settings) -> str:
    return s.model_asset.partition(":")[0]


# Reads --------------------------------------------------------------------------------------------------
def serving(ml: Any, endpoint: str) -> Serving | None:
    """The colour with the most live traffic and what it recorded; None when nothing serves."""
    live = read_live_state(ml, endpoint)
    if not live.traffic:
        return None
    name = max(live.traffic, key=lambda n: live.traffic[n])
    tags = ml.online_deployments.get(name=name, endpoint_name=endpoint).tags or {}
    image = tags.get(IMAGE_TAG)
    return Serving(name, image, tags.get(MODEL_TAG), built_from(ml, image))


def built_from(ml: Any, image: str | None) -> str | None:
    """The base an ``r1-vllm`` version registered for ``image`` records (tasks/image/build.py)."""
    if not image:
        return None
    try:
        versions = list(ml.environments.list(name=ENVIRONMENT_NAME))
    except ResourceNotFoundError:
        return None
    return next(((e.tags or {}).get("base_image") for e in versions if e.image == image), None)


def latest_model(ml: Any, s: Settings) -> str | None:
    """``name:version`` of the newest registered version of R1_MODEL_ASSET's name (integer versions)."""
    name = asset_name(s)
    try:
        versions = [m.version for m in ml.models.list(name=name)]
    except ResourceNotFoundError:
        return None
    numbered = [v for v in versions if v and v.isdigit()]
    return f"{name}:{max(numbered, key=int)}" if numbered else None


def current_digest(s: Settings, base: UpstreamBase) -> str:
    """The digest ``base``'s tag points at now, read from its upstream registry (NotUpstream if not served there)."""
    base_url, verify = clients.upstream_registry(s, base.registry)
    return upstream_digest(base_url, api_repository(base.registry, base.repository), base.tag, verify)


def upstream_drift(ml: Any, acr: Any, s: Settings) -> list[InputChange]:
    """Redeploy's check, read-only (no import, no build), for the status flow: the upstream tag's digest and the
    newest model version against what serves (``acr`` is not needed: the digest is read from the upstream)."""
    now = serving(ml, s.endpoint_name)
    serving_base = now.base_image if now else None
    tracked = upstream_base(s.upstream_base)
    if tracked is None:
        base = base_change(serving_base, None, None)
    else:
        try:
            digest = current_digest(s, tracked)
        except (NotUpstream, UpstreamRegistryError, httpx.HTTPError) as err:
            base = InputChange("base", serving_base, None, None,
                               f"{tracked.registry}/{tracked.reference}: the upstream could not be read: {err}")
        else:
            base = base_change(serving_base, f"{tracked.registry}/{tracked.repository}@{digest}", tracked)
    return [base, model_change(now.model if now else None, latest_model(ml, s), s)]
