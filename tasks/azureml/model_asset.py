"""The registered model asset the deployment mounts: served offline from the workspace's own storage.

Uploading the weights is a one-time step outside the rollout (azcopy into the workspace's datastore);
the rollout only makes sure the asset is registered, from that datastore path, so no container ever
downloads from a public hub.
"""

from __future__ import annotations

from typing import Any

from azure.ai.ml.entities import Model
from azure.core.exceptions import ResourceNotFoundError

from tasks.settings import Settings


def ensure_model_asset(ml: Any, settings: Settings) -> str:
    """Register ``R1_MODEL_ASSET`` from ``R1_MODEL_ASSET_PATH`` unless it exists; returns a log line."""
    if settings.model_supply != "registered-asset":
        return f"model supply {settings.model_supply}: no asset to register"
    name, _, version = settings.model_asset.partition(":")
    try:
        ml.models.get(name=name, version=version)
        return f"model asset {name}:{version} is registered"
    except ResourceNotFoundError:
        ml.models.create_or_update(
            Model(
                name=name,
                version=version,
                path=settings.model_asset_path,
                type="custom_model",
                description=f"{settings.model_id} at revision {settings.model_revision}",
                tags={"model_id": settings.model_id, "model_revision": settings.model_revision},
            )
        )
        return f"model asset {name}:{version} registered from {settings.model_asset_path}"
