"""The workspace's container registry and its ACR Tasks runs: thin calls of azure-mgmt-containerregistry 14.0.0.

The workspace names its registry (``container_registry``, an ARM id, possibly in another resource group);
``az acr build`` is these calls: an upload URL, a ``DockerBuildRequest`` run, the run's state and its log.
SAS URLs are credentials: they are handed on as ``SecretStr`` and never logged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from azure.mgmt.containerregistry.v2025_03_01_preview.models import (
    DockerBuildRequest,
    ImportImageParameters,
    ImportSource,
    PlatformProperties,
)
from azure.mgmt.core.tools import parse_resource_id
from pydantic import SecretStr

MIN_RUN_TIMEOUT_S, MAX_RUN_TIMEOUT_S = 300, 28_800  # what ACR accepts as a run's timeout
FINAL_STATUSES = frozenset({"Succeeded", "Failed", "Canceled", "Error", "Timeout"})


@dataclass(frozen=True)
class Registry:
    resource_group: str
    name: str
    login_server: str


@dataclass(frozen=True)
class RunState:
    run_id: str
    status: str
    digest: str | None  # of the first output image, once Succeeded
    repository: str | None
    error: str | None  # runErrorMessage

    @property
    def final(self) -> bool:
        return self.status in FINAL_STATUSES


def workspace_registry(ml: Any, acr: Any, workspace: str) -> Registry:
    """The registry the workspace pulls its images from."""
    registry_id = ml.workspaces.get(workspace).container_registry
    if not registry_id:
        raise LookupError(f"workspace {workspace} names no container registry")
    parts = parse_resource_id(registry_id)
    group, name = parts["resource_group"], parts["name"]
    return Registry(group, name, acr.registries.get(group, name).login_server)


def upload_url(acr: Any, reg: Registry) -> tuple[SecretStr, str]:
    """(the SAS URL to PUT the context to, the relative path a run's ``sourceLocation`` names)."""
    source = acr.registries.get_build_source_upload_url(reg.resource_group, reg.name)
    return SecretStr(source.upload_url), source.relative_path


def schedule_build(acr: Any, reg: Registry, source: str, image_name: str, timeout_s: float) -> str:
    """Queue a Docker build of the uploaded context that pushes ``image_name``; returns the run id."""
    request = DockerBuildRequest(
        source_location=source, docker_file_path="Dockerfile", image_names=[image_name], is_push_enabled=True,
        platform=PlatformProperties(os="Linux", architecture="amd64"),
        timeout=min(max(int(timeout_s) + 60, MIN_RUN_TIMEOUT_S), MAX_RUN_TIMEOUT_S),  # ours cancels first
    )
    return acr.registries.schedule_run(reg.resource_group, reg.name, request).run_id


def run_state(acr: Any, reg: Registry, run_id: str) -> RunState:
    run = acr.runs.get(reg.resource_group, reg.name, run_id)
    image = (run.output_images or [None])[0]
    return RunState(run.run_id, run.status, image.digest if image else None, image.repository if image else None,
                    run.run_error_message)


def log_url(acr: Any, reg: Registry, run_id: str) -> SecretStr:
    return SecretStr(acr.runs.get_log_sas_url(reg.resource_group, reg.name, run_id).log_link)


def cancel_run(acr: Any, reg: Registry, run_id: str) -> None:
    acr.runs.cancel(reg.resource_group, reg.name, run_id)


def import_image(acr: Any, reg: Registry, registry_uri: str, source_image: str, target: str) -> None:
    """Copy ``source_image`` (``repository@sha256:..``: the digest checked upstream, so nothing can move in between)
    from a public registry into ``reg`` as ``target`` (Force: a patched release moves the tag). ACR's answer names
    no digest; the caller already knows it."""
    params = ImportImageParameters(source=ImportSource(registry_uri=registry_uri, source_image=source_image),
                                   target_tags=[target], mode="Force")
    acr.registries.begin_import_image(reg.resource_group, reg.name, params).result()
