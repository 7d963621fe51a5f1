"""What the rollout needs to be allowed to do, and whether its principal may: Azure RBAC, read through the SDK.

``required_actions(s)`` lists the ARM actions a rollout with settings ``s`` performs, by scope: the
workspace (Azure ML) and the resource group (Azure Monitor autoscale settings live there, not in the
workspace). ``missing_actions`` is Azure's effective-permission rule as a pure function; ``refusal``
asks ``permissions.list_for_resource`` / ``list_for_resource_group`` (the caller's own permissions) and
says what is missing, so the preflight can refuse before anything changes. docs/emulator.md
("Least privilege") maps these actions to the built-in roles.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any

from tasks.settings import Settings

ML = "Microsoft.MachineLearningServices/workspaces"
PERMISSIONS_READ = "Microsoft.Authorization/permissions/read"
AUTH_MODE_ACTION = {  # how the rollout gets its scoring credential (get_keys)
    "key": f"{ML}/onlineEndpoints/listKeys/action",
    "aml_token": f"{ML}/onlineEndpoints/token/action",
    "aad_token": f"{ML}/onlineEndpoints/score/action",
}
AUTOSCALE_ACTIONS = ("Microsoft.Insights/autoscalesettings/read", "Microsoft.Insights/autoscalesettings/write",
                     "Microsoft.Insights/autoscalesettings/delete")
ACR = "Microsoft.ContainerRegistry/registries"
BUILD_ACTIONS = (f"{ACR}/read", f"{ACR}/listBuildSourceUploadUrl/action", f"{ACR}/scheduleRun/action",
                 f"{ACR}/runs/read", f"{ACR}/runs/listLogSasUrl/action", f"{ACR}/runs/cancel/action")


def required_actions(s: Settings) -> dict[str, list[str]]:
    """ARM actions a rollout performs, keyed by the scope they are checked at (``workspace``, ``resource_group``,
    and with ``R1_IMAGE`` empty the workspace's ``registry``, where ACR Tasks builds the image).

    Never ``onlineEndpoints/delete``: the rollout creates and updates its endpoint but never deletes it."""
    workspace = [
        f"{ML}/read",  # preflight: the live region
        f"{ML}/onlineEndpoints/read", f"{ML}/onlineEndpoints/write",  # create, traffic, the lock's tags
        f"{ML}/onlineEndpoints/deployments/read", f"{ML}/onlineEndpoints/deployments/write",
        f"{ML}/onlineEndpoints/deployments/delete",  # retire the old colour, roll back the new one
        f"{ML}/onlineEndpoints/deployments/getLogs/action",  # logs kept as evidence on a failure
        f"{ML}/environments/versions/read", f"{ML}/environments/versions/write",  # the deployment's image
        AUTH_MODE_ACTION[s.auth_mode],
    ]
    if s.model_supply == "registered-asset":
        workspace += [f"{ML}/models/versions/read", f"{ML}/models/versions/write"]
    return {"workspace": workspace,
            "resource_group": list(AUTOSCALE_ACTIONS) if s.autoscale.enabled else [],
            "registry": [] if s.image else list(BUILD_ACTIONS)}


@lru_cache(maxsize=512)
def _pattern(action: str) -> re.Pattern:
    return re.compile(".*".join(re.escape(part) for part in action.split("*")), re.IGNORECASE)


def _field(permission: Any, snake: str, camel: str) -> list[str]:
    if isinstance(permission, Mapping):
        return list(permission.get(camel, permission.get(snake)) or [])
    return list(getattr(permission, snake, None) or [])


def _grants(permission: Any, action: str) -> bool:
    return (any(_pattern(a).fullmatch(action) for a in _field(permission, "actions", "actions"))
            and not any(_pattern(a).fullmatch(action) for a in _field(permission, "not_actions", "notActions")))


def missing_actions(required: Iterable[str], permissions: Iterable[Any]) -> list[str]:
    """The actions in ``required`` that no permission grants, in order.

    A permission (an SDK ``Permission`` or ARM's ``{"actions", "notActions"}`` dict) grants an action when
    one of its ``actions`` matches and none of its ``notActions`` does; ``*`` matches any characters;
    matching ignores case. Each permission stands alone, as in Azure: one role's ``notActions`` do not
    take away what another role grants."""
    permissions = list(permissions)
    return [action for action in required if not any(_grants(p, action) for p in permissions)]


def caller_permissions(client: Any, s: Settings, registry_id: str | None) -> dict[str, list[Any]]:
    """The caller's permissions at the workspace, its resource group and its registry (one SDK call each)."""
    from azure.mgmt.core.tools import parse_resource_id

    found = {
        "workspace": list(client.permissions.list_for_resource(
            s.resource_group, "Microsoft.MachineLearningServices", "", "workspaces", s.workspace)),
        "resource_group": list(client.permissions.list_for_resource_group(s.resource_group)),
        "registry": [],
    }
    if registry_id:
        reg = parse_resource_id(registry_id)
        found["registry"] = list(client.permissions.list_for_resource(
            reg["resource_group"], "Microsoft.ContainerRegistry", "", "registries", reg["name"]))
    return found


def refusal(s: Settings, client: Any, registry_id: str | None = None) -> str | None:
    """Why the rollout's principal may not run it (the missing actions), or None.

    ``client`` is the factory's ``clients.authorization_client(s)``; ``registry_id`` the workspace's
    ``container_registry`` (its permissions are read only when the rollout builds the image)."""
    from azure.core.exceptions import HttpResponseError

    try:
        permissions = caller_permissions(client, s, None if s.image else registry_id)
    except HttpResponseError as err:
        if err.status_code == 403:
            return f"the principal may not read its own permissions ({PERMISSIONS_READ}): {err.message}"
        raise
    missing = [a for scope, actions in required_actions(s).items()
               for a in missing_actions(actions, permissions[scope])]
    if not missing:
        return None
    return (f"the principal lacks {len(missing)} permission(s) this rollout needs on workspace {s.workspace} "
            f"(resource group {s.resource_group}): " + ", ".join(missing))
