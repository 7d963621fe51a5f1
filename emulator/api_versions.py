"""The api-versions the emulator's ARM accepts, per resource provider: one table.

Exactly the versions the SDKs in this repo send (azure-ai-ml 1.35.2 pins one per operation group in
``MLClient``; azure-mgmt-monitor 7.0.0 sends 2022-10-01 for autoscale settings; the registry's are
azure-mgmt-containerregistry 14.0.0's) plus the stable
Microsoft.MachineLearningServices spec version 2025-12-01. ARM answers a request without
``api-version`` with 400 ``MissingApiVersionParameter`` and one with a version the resource provider
does not register with 400 ``InvalidApiVersionParameter`` that lists the supported versions.
"""

from __future__ import annotations

from emulator.rules import ArmError

SUPPORTED: dict[str, tuple[str, ...]] = {
    "microsoft.machinelearningservices": (
        "2022-02-01-preview",  # online endpoints (and the deployment list inside endpoints.get)
        "2023-04-01-preview",  # online deployments, environment versions, the operation-status URLs
        "2023-08-01-preview",  # model versions
        "2024-10-01-preview",  # workspaces (and the workspace-location lookups)
        "2025-12-01",          # the stable spec (and the generated client's default)
    ),
    "microsoft.insights": ("2022-10-01", "2024-02-01"),  # autoscale settings; metrics (azure-mgmt-monitor 7.0.0)
    "microsoft.authorization": ("2022-04-01",),  # azure-mgmt-authorization 4.0.0 (permissions)
    # azure-mgmt-containerregistry 14.0.0: ACR Tasks' stable version, the one tasks/clients.py sends, the newest
    "microsoft.containerregistry": ("2019-06-01-preview", "2025-03-01-preview", "2025-04-01"),
}


def provider(path: str) -> str | None:
    """The resource provider a path addresses (the last ``/providers/<namespace>`` segment)."""
    parts = path.lower().split("/")
    found = None
    for i, part in enumerate(parts[:-1]):
        if part == "providers":
            found = parts[i + 1]
    return found


def check(path: str, api_version: str | None) -> None:
    if not api_version:
        raise ArmError(400, "MissingApiVersionParameter",
                       "The api-version query parameter (?api-version=) is required for all requests.")
    supported = SUPPORTED.get(provider(path) or "")
    if supported is not None and api_version.lower() not in supported:
        raise ArmError(400, "InvalidApiVersionParameter",
                       f"The api-version '{api_version}' is invalid. The supported versions are "
                       f"'{','.join(supported)}'. Please see https://aka.ms/api-upgrade for more details.")
