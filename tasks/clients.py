"""The one client factory: the only code that knows whether we talk to Azure or the local emulator.

``R1_TARGET=azure``: public cloud clients with ``DefaultAzureCredential``.
``R1_TARGET=local``: the same SDK clients pointed at the emulator from its connection.json — custom
cloud metadata (all six keys, a cloud name unique to the URL), the emulator's CA for TLS, fast LRO
polling, and azure-identity's own ``ClientSecretCredential`` signing in to the emulator's Entra ID
tenant (authority = the emulator's URL) as the state dir's default principal, or as the principal the
``AZURE_CLIENT_ID``/``AZURE_CLIENT_SECRET`` variables name when ``AZURE_TENANT_ID`` is the emulator's tenant.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from emulator import process
from emulator.layout import StateDir
from tasks.redaction import redact_http_debug_log
from tasks.settings import Settings

LOCAL_POLL_INTERVAL_S = 0.05


class EmulatorUnavailable(RuntimeError):
    """R1_TARGET=local but no emulator runs on the state dir (start one, or use ensure_emulator)."""


@dataclass(frozen=True)
class Connection:
    arm_url: str
    ca_cert: str
    location: str
    scoring_base: str
    state_dir: Path
    tenant_id: str
    client_id: str  # the default principal (Owner); its secret is DIR/secrets/client_secret (0600)


def connection(settings: Settings) -> Connection:
    """The running emulator's connection.json for ``settings.emulator_state_dir``."""
    state = StateDir(Path(settings.emulator_state_dir).resolve())
    conn = process.connection(state)
    if conn is None:
        raise EmulatorUnavailable(
            f"no emulator is running on {state.root}; start one with "
            f"`python -m emulator --state-dir {state.root} --detach`"
        )
    if "tenant_id" not in conn:  # started by a version without an Entra ID tenant
        raise EmulatorUnavailable(
            f"the emulator running on {state.root} predates its Entra ID tenant; restart it: "
            f"`python -m emulator stop --state-dir {state.root}` (the next command starts a new one)"
        )
    return Connection(conn["arm_url"].rstrip("/"), conn["ca_cert"], conn["location"], conn["scoring_base"],
                      state.root, conn["tenant_id"], conn["client_id"])


def ensure_emulator(settings: Settings) -> Connection:
    """Start an emulator in the background for the state dir unless one is running; return its connection."""
    if settings.target != "local":
        raise ValueError("ensure_emulator is only meaningful for R1_TARGET=local")
    state = StateDir(Path(settings.emulator_state_dir).resolve())
    if process.connection(state) is None:
        try:
            process.start_detached(state.root, ["--location", settings.region, "--workspace", settings.workspace,
                                                "--resource-group", settings.resource_group,
                                                "--subscription-id", settings.subscription_id])
        except process.EmulatorError:
            if process.running_pid(state) is None:
                raise
            _await_ready(state)  # lost a start race to another caller: use the one it started
    return connection(settings)


def region_fields(settings: Settings, region: str) -> dict[str, str]:
    """What else a region's settings change on this target: locally, each region is its own emulator (its own
    workspace, location, quota and registry) under the state dir; on Azure, nothing (the workspace says it all)."""
    if settings.target != "local":
        return {}
    return {"emulator_state_dir": str(Path(settings.emulator_state_dir).resolve() / "regions" / region)}


def _await_ready(state: StateDir, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while process.connection(state) is None:
        if process.running_pid(state) is None or time.monotonic() > deadline:
            raise EmulatorUnavailable(f"the emulator starting on {state.root} did not become ready")
        time.sleep(0.05)


def _local_principal(conn: Connection) -> tuple[str, SecretStr]:
    """(client id, secret) to sign in to the emulator's tenant with: the AZURE_* variables when they name
    this tenant (as EnvironmentCredential reads them), else the state dir's default principal."""
    if (os.environ.get("AZURE_TENANT_ID", "").lower() == conn.tenant_id.lower()
            and os.environ.get("AZURE_CLIENT_ID") and os.environ.get("AZURE_CLIENT_SECRET")):
        return os.environ["AZURE_CLIENT_ID"], SecretStr(os.environ["AZURE_CLIENT_SECRET"])
    return conn.client_id, SecretStr(StateDir(conn.state_dir).client_secret.read_text().strip())


def _local_credential(conn: Connection):
    """azure-identity's ClientSecretCredential against the emulator's tenant; the secret is unwrapped only here."""
    from azure.identity import ClientSecretCredential

    client_id, secret = _local_principal(conn)
    return ClientSecretCredential(
        conn.tenant_id, client_id, secret.get_secret_value(), authority=conn.arm_url,
        disable_instance_discovery=True,  # else MSAL asks login.microsoftonline.com first
        connection_verify=conn.ca_cert,
    )


def credential(settings: Settings):
    """The credential for management calls and aad_token scoring."""
    if settings.target == "azure":
        from azure.identity import DefaultAzureCredential

        return DefaultAzureCredential()
    return _local_credential(connection(settings))


def data_plane_ca(settings: Settings) -> str | bool:
    """The CA data-plane calls (scoring, blob SAS URLs) trust: the emulator's CA file, or True (the system store) on Azure.

    ``tasks.loadtest.client.tls_context`` turns either into the ``ssl.SSLContext`` httpx takes."""
    return True if settings.target == "azure" else connection(settings).ca_cert


def upstream_registry(settings: Settings, registry_host: str) -> tuple[str, str | bool]:
    """(base URL of the Docker Registry v2 API, the CA to trust) for the public registry ``registry_host`` names.
    On Azure the registry itself (Docker Hub's API host for its aliases), system CA; locally the emulator's
    ARM listener, which serves its upstream's tags on ``/v2/`` (emulator/upstream.py), with its CA."""
    if settings.target == "azure":
        from tasks.redeploy.upstream_registry import DOCKER_HUB_ALIASES, DOCKER_HUB_API

        return (DOCKER_HUB_API if registry_host.lower() in DOCKER_HUB_ALIASES else f"https://{registry_host}"), True
    conn = connection(settings)
    return conn.arm_url, conn.ca_cert


def silence_poll_dots() -> None:
    """azure-ai-ml prints a '.' to stdout per LRO poll; keep stdout clean for --json CLIs."""
    from azure.ai.ml._utils._azureml_polling import AzureMLPolling
    from azure.mgmt.core.polling.arm_polling import ARMPolling

    AzureMLPolling.update_status = ARMPolling.update_status  # type: ignore[method-assign]


def ml_client(settings: Settings):
    from azure.ai.ml import MLClient

    silence_poll_dots()
    ids = (settings.subscription_id, settings.resource_group, settings.workspace)
    if settings.target == "azure":
        # Explicit: MLClient otherwise reuses the process-wide AZUREML_CURRENT_CLOUD a local client set.
        return MLClient(credential(settings), *ids, cloud="AzureCloud")
    from azure.ai.ml.constants._common import LROConfigurations

    conn = connection(settings)
    LROConfigurations.POLL_INTERVAL = LOCAL_POLL_INTERVAL_S  # deployment PUT / endpoint DELETE pollers
    url = conn.arm_url + "/"
    return MLClient(
        _local_credential(conn), *ids,
        cloud="R1Emulator" + hashlib.sha256(url.encode()).hexdigest()[:12],
        cloud_metadata={
            "azure_portal": "https://portal.azure.com/",
            "resource_manager": url,
            "active_directory": "https://login.microsoftonline.com/",
            "aml_resource_id": "https://ml.azure.com/",
            "storage_endpoint": "core.windows.net",
            "registry_discovery_endpoint": url,
        },
        connection_verify=conn.ca_cert,
        polling_interval=LOCAL_POLL_INTERVAL_S,
    )


def authorization_client(settings: Settings):
    """``AuthorizationManagementClient``: what the caller may do (``permissions.list_for_resource...``)."""
    from azure.mgmt.authorization import AuthorizationManagementClient

    if settings.target == "azure":
        return AuthorizationManagementClient(credential(settings), settings.subscription_id)
    conn = connection(settings)
    return AuthorizationManagementClient(_local_credential(conn), settings.subscription_id, base_url=conn.arm_url,
                                         connection_verify=conn.ca_cert)


def monitor_client(settings: Settings):
    from azure.mgmt.monitor import MonitorManagementClient

    if settings.target == "azure":
        return MonitorManagementClient(credential(settings), settings.subscription_id)
    conn = connection(settings)
    return MonitorManagementClient(
        _local_credential(conn), settings.subscription_id, base_url=conn.arm_url,
        connection_verify=conn.ca_cert, polling_interval=LOCAL_POLL_INTERVAL_S,
    )


# One api-version for every ACR Tasks call (registries.get, get_build_source_upload_url, schedule_run,
# runs.get / get_log_sas_url / cancel): 2019-06-01-preview has no registries.get, and this is the version the
# successor package (azure-mgmt-containerregistrytasks) speaks, so moving to it changes no request. docs/image-build.md
ACR_API_VERSION = "2025-03-01-preview"


def registry_client(settings: Settings):
    """azure-mgmt-containerregistry 14.0.0's ``ContainerRegistryManagementClient``, ACR Tasks included."""
    from azure.mgmt.containerregistry import ContainerRegistryManagementClient

    if settings.target == "azure":
        return ContainerRegistryManagementClient(credential(settings), settings.subscription_id,
                                                 api_version=ACR_API_VERSION)
    conn = connection(settings)
    return ContainerRegistryManagementClient(_local_credential(conn), settings.subscription_id,
                                             api_version=ACR_API_VERSION, base_url=conn.arm_url,
                                             connection_verify=conn.ca_cert)


def blob_client(settings: Settings, sas_url: SecretStr | str):
    """A ``BlobClient`` for a SAS URL a registry handed out (build-context upload, run log). The SAS is the
    credential: the URL is a secret, unwrapped only here, and never logged."""
    from azure.storage.blob import BlobClient

    redact_http_debug_log()
    url = sas_url.get_secret_value() if isinstance(sas_url, SecretStr) else sas_url
    return BlobClient.from_blob_url(url, connection_verify=data_plane_ca(settings))


def prepare_target(settings: Settings) -> None:
    """Make the target reachable before any client is built: locally, start an emulator if none runs."""
    if settings.target == "local":
        ensure_emulator(settings)
