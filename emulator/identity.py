"""The emulator's Entra ID tenant and Azure RBAC: principals, role definitions, role assignments.

``DIR/identity.json`` (0600) holds the tenant id, the principals (client id, object id, the SHA-256
of their secret — never the secret) and role assignments ``(principal, role, scope)``. The default
principal is created on first start with the secret in ``DIR/secrets/client_secret`` (0600) and is
``Owner`` at ``/``. ``python -m emulator principal add --role Reader`` adds one more (its secret goes to
``DIR/secrets/clients/<client_id>``, 0600); a running emulator re-reads the file when it changes.

Actions follow ARM: ``{provider}/{type}[/{child type}...]/read|write|delete`` or ``.../{name}/action``,
matched case-insensitively with ``*`` as a wildcard; a permission grants an action that one of its
``actions`` matches and none of its ``notActions`` does (Azure's effective-permission rule).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import re
import secrets
import uuid
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from emulator.layout import StateDir, write_private

ML = "Microsoft.MachineLearningServices"
DEPLOYER = "AzureML Endpoint Deployer"
ROLE_DEFINITIONS: dict[str, dict[str, list[str]]] = {
    "Owner": {"actions": ["*"], "notActions": []},
    "Reader": {"actions": ["*/read"], "notActions": []},
    # What a blue/green rollout needs and nothing more: it may create and update endpoints, deployments,
    # traffic, keys, autoscale settings, models and environments, and build images, but never delete an endpoint.
    DEPLOYER: {
        "actions": [
            f"{ML}/workspaces/read",
            f"{ML}/workspaces/onlineEndpoints/read",
            f"{ML}/workspaces/onlineEndpoints/write",
            f"{ML}/workspaces/onlineEndpoints/listKeys/action",
            f"{ML}/workspaces/onlineEndpoints/regenerateKeys/action",
            f"{ML}/workspaces/onlineEndpoints/token/action",
            f"{ML}/workspaces/onlineEndpoints/score/action",
            f"{ML}/workspaces/onlineEndpoints/deployments/*",
            f"{ML}/workspaces/environments/*/read",
            f"{ML}/workspaces/environments/*/write",
            f"{ML}/workspaces/models/*/read",
            f"{ML}/workspaces/models/*/write",
            f"{ML}/locations/*/read",
            "Microsoft.Insights/autoscalesettings/*",
            "Microsoft.Authorization/permissions/read",
            # the image build: ACR Tasks in the workspace's registry (upload, run, log, cancel)
            "Microsoft.ContainerRegistry/registries/read",
            "Microsoft.ContainerRegistry/registries/listBuildSourceUploadUrl/action",
            "Microsoft.ContainerRegistry/registries/scheduleRun/action",
            "Microsoft.ContainerRegistry/registries/runs/*",
        ],
        "notActions": [],
    },
}


class IdentityError(ValueError):
    """A request the tenant refuses; ``error``/``description`` are what Entra ID answers."""

    def __init__(self, error: str, code: int, description: str, status: int = 400):
        super().__init__(f"AADSTS{code}: {description}")
        self.error, self.code, self.status = error, code, status
        self.description = f"AADSTS{code}: {description}"


@dataclass(frozen=True)
class Principal:
    client_id: str
    object_id: str
    name: str
    secret_sha256: str


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@lru_cache(maxsize=1024)
def _pattern(action: str) -> re.Pattern:
    return re.compile(".*".join(re.escape(part) for part in action.split("*")), re.IGNORECASE)


def grants(permission: dict, action: str) -> bool:
    """True if ``permission`` (``actions``/``notActions``) allows ``action``."""
    return (any(_pattern(a).fullmatch(action) for a in permission.get("actions", []))
            and not any(_pattern(a).fullmatch(action) for a in permission.get("notActions", [])))


def _normal_scope(scope: str) -> str:
    return "/" + "/".join(part for part in scope.lower().split("/") if part)


def covers(assignment_scope: str, scope: str) -> bool:
    """An assignment at ``/subscriptions/s/resourceGroups/rg`` applies to everything under it."""
    outer, inner = _normal_scope(assignment_scope), _normal_scope(scope)
    return outer == "/" or inner == outer or inner.startswith(outer + "/")


def action_for(method: str, path: str) -> tuple[str, str]:
    """(ARM action, scope) of a request: ``PUT .../workspaces/w/onlineEndpoints/e`` is
    ``Microsoft.MachineLearningServices/workspaces/onlineEndpoints/write`` over that resource id."""
    parts = [p for p in path.split("/") if p]
    scope = "/" + "/".join(parts)
    lowered = [p.lower() for p in parts]
    if "providers" not in lowered:
        kind = {"GET": "read", "DELETE": "delete"}.get(method, "write")
        return f"Microsoft.Resources/subscriptions/resourceGroups/{kind}", scope
    at = len(lowered) - 1 - lowered[::-1].index("providers")
    namespace, rest = parts[at + 1] if at + 1 < len(parts) else "", parts[at + 2:]
    types = rest[0::2]  # type, name, type, name, ...
    if method == "POST" and len(rest) % 2 == 1 and len(rest) > 1:
        # POST .../{type}/{name}/{verb}: an action on the named resource
        types, verb = rest[0:-1:2], rest[-1]
        scope = "/" + "/".join(parts[:-1])
        return "/".join([namespace, *types, verb, "action"]), scope
    kind = {"GET": "read", "HEAD": "read", "DELETE": "delete"}.get(method, "write")
    return "/".join([namespace, *types, kind]), scope


class Tenant:
    """The tenant a running emulator serves; re-reads ``identity.json`` when another process changed it."""

    def __init__(self, state: StateDir):
        self.state = state
        self._version: tuple[int, int] | None = None
        self._data: dict = {}
        ensure_default(state)
        self._reload()

    # ---- reading ---------------------------------------------------------------------------

    def _reload(self) -> None:
        try:
            st = self.state.identity.stat()
        except FileNotFoundError:
            return  # the state dir is going away; the emulator stops on its own
        if (st.st_ino, st.st_mtime_ns) != self._version:  # written by replace: a new inode each time
            self._data = json.loads(self.state.identity.read_text())
            self._version = (st.st_ino, st.st_mtime_ns)

    @property
    def tenant_id(self) -> str:
        return self._data["tenant_id"]

    @property
    def default_principal(self) -> Principal:
        return Principal(**self._data["principals"][0])

    def principal(self, client_id: str) -> Principal | None:
        self._reload()
        for p in self._data["principals"]:
            if p["client_id"].lower() == client_id.lower():
                return Principal(**p)
        return None

    def authenticate(self, tenant: str, client_id: str, secret: str | None) -> Principal:
        """The principal for a client-credentials request, or the error Entra ID answers."""
        if tenant.lower() != self.tenant_id.lower():
            raise IdentityError("invalid_request", 90002,
                                f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID "
                                "and are signing into the correct cloud.")
        principal = self.principal(client_id or "")
        if principal is None:
            raise IdentityError("unauthorized_client", 700016,
                                f"Application with identifier '{client_id}' was not found in the directory "
                                f"'{self.tenant_id}'.")
        if not secret:
            raise IdentityError("invalid_client", 7000216,
                                "'client_assertion', 'client_secret' or 'request' is required for the "
                                "'client_credentials' grant type.", status=401)
        if not hmac.compare_digest(_digest(secret), principal.secret_sha256):
            raise IdentityError("invalid_client", 7000215,
                                "Invalid client secret provided. Ensure the secret being sent in the request "
                                f"is the client secret value, not the client secret ID, for a secret added "
                                f"to app '{principal.client_id}'.", status=401)
        return principal

    def permissions(self, object_id: str, scope: str) -> list[dict]:
        """One entry per role assignment of ``object_id`` that applies at ``scope`` (what ARM lists)."""
        self._reload()
        found = []
        for a in self._data["role_assignments"]:
            if a["principal_id"] == object_id and covers(a["scope"], scope):
                role = ROLE_DEFINITIONS[a["role"]]
                found.append({"actions": list(role["actions"]), "notActions": list(role["notActions"]),
                              "dataActions": [], "notDataActions": []})
        return found

    def allowed(self, object_id: str, action: str, scope: str) -> bool:
        return any(grants(p, action) for p in self.permissions(object_id, scope))


# ---- writing (the CLI and the first start) ------------------------------------------------------

@contextlib.contextmanager
def _locked(state: StateDir):
    state.root.mkdir(parents=True, exist_ok=True)
    fd = os.open(state.root / "identity.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _write(state: StateDir, data: dict) -> None:
    write_private(state.identity, (json.dumps(data, indent=2) + "\n").encode())


def _new_principal(name: str, secret: str) -> dict:
    return {"client_id": str(uuid.uuid4()), "object_id": str(uuid.uuid4()), "name": name,
            "secret_sha256": _digest(secret)}


def _initial(default_secret: str) -> dict:
    owner = _new_principal("r1-emulator-default", default_secret)
    return {"tenant_id": str(uuid.uuid4()), "principals": [owner],
            "role_assignments": [{"principal_id": owner["object_id"], "role": "Owner", "scope": "/"}]}


def ensure_default(state: StateDir) -> None:
    """Create the tenant and the default Owner (secret in ``secrets/client_secret``) unless they exist."""
    if not state.client_secret.exists():
        write_private(state.client_secret, secrets.token_urlsafe(32).encode())
    with _locked(state):
        if not state.identity.exists():
            _write(state, _initial(state.client_secret.read_text().strip()))


def add_principal(state: StateDir, role: str, scope: str = "/", name: str = "") -> tuple[Principal, Path]:
    """A new principal with ``role`` at ``scope``; its secret is written to a 0600 file whose path is returned."""
    if role not in ROLE_DEFINITIONS:
        raise ValueError(f"unknown role {role!r}; known: {', '.join(ROLE_DEFINITIONS)}")
    if not scope.startswith("/"):
        raise ValueError(f"scope {scope!r} must be an ARM id starting with '/'")
    ensure_default(state)
    secret = secrets.token_urlsafe(32)
    entry = _new_principal(name or f"r1-{role.lower().replace(' ', '-')}", secret)
    path = state.root / "secrets" / "clients" / entry["client_id"]
    write_private(path, secret.encode())
    with _locked(state):
        data = json.loads(state.identity.read_text())
        data["principals"].append(entry)
        data["role_assignments"].append({"principal_id": entry["object_id"], "role": role, "scope": scope})
        _write(state, data)
    return Principal(**entry), path
