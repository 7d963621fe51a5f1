"""Suite-wide set-up: an isolated Prefect home, no telemetry, and one Prefect test server per session."""

from __future__ import annotations

import os
import ssl
import tempfile
from dataclasses import dataclass
from typing import Any

import pytest

os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="r1-prefect-home-"))
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["DO_NOT_TRACK"] = "1"
# Tests choose their settings explicitly; a developer's .env or R1_* variables must not leak in.
for _name in [n for n in os.environ if n.startswith("R1_")]:
    del os.environ[_name]


@pytest.fixture(scope="session")
def prefect_api():
    """A real (temporary) Prefect API for tests that run flows through the engine."""
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
            yield


@pytest.fixture(autouse=True)
def _no_dotenv(monkeypatch, tmp_path):
    """Run each test from a clean directory so a stray .env never changes its settings.

    MLClient writes its cloud name into os.environ (AZUREML_CURRENT_CLOUD); a child process that
    inherits an emulator's cloud name fails to import azure.ai.ml, so no test starts with one set.
    """
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AZUREML_CURRENT_CLOUD", raising=False)


# ---- emulator fixtures (docs/emulator.md) -------------------------------------------------------

def _default_api_version(request) -> None:
    """Raw ARM calls (``EmulatorHandle.arm_client``) without ``api-version`` get the newest one the emulator
    accepts for their provider (emulator/api_versions.py), as an SDK would send one; a test of a missing
    api-version uses a bare httpx call."""
    from emulator import api_versions

    if "api-version" not in request.url.params:
        versions = api_versions.SUPPORTED.get(api_versions.provider(request.url.path) or "")
        if versions:
            request.url = request.url.copy_add_param("api-version", versions[-1])


@dataclass(frozen=True)
class Principal:
    """A principal of an emulator's tenant (``EmulatorHandle.add_principal``)."""

    client_id: str
    object_id: str
    secret: Any  # pydantic SecretStr


class EmulatorHandle:
    """A running emulator process for a state dir, its admin routes (faults, instances) and its tenant
    (principals with roles, their credentials)."""

    def __init__(self, state_dir):
        from emulator.layout import StateDir

        self.state_dir = state_dir
        self.state = StateDir(state_dir)

    @property
    def conn(self) -> dict:
        return self.state.read_connection()

    def settings(self, **overrides):
        from tasks.settings import load_settings

        return load_settings(target="local", emulator_state_dir=self.state_dir, **overrides)

    def tls(self) -> ssl.SSLContext:
        """What httpx's ``verify=`` needs to trust the emulator (its CA; httpx 0.28 deprecates a path)."""
        return ssl.create_default_context(cafile=self.conn["ca_cert"])

    def admin(self, method: str, path: str, json=None):
        import httpx

        secret = self.state.client_secret.read_text().strip()
        return httpx.request(method, self.conn["arm_url"] + path, json=json, verify=self.tls(),
                             headers={"x-emulator-secret": secret}, trust_env=False, timeout=30)

    def arm_client(self, credential=None):
        """A raw ARM client (an ``httpx.Client`` on the ARM URL with a management bearer token), for calls the
        SDK would not make or would check locally first; close it (or use it in ``with``). The token comes from
        ``credential`` (default: the factory's, the state dir's Owner)."""
        import httpx

        from tasks import clients

        credential = credential or clients.credential(self.settings())
        token = credential.get_token(self.conn["arm_url"] + "/.default").token
        return httpx.Client(base_url=self.conn["arm_url"], verify=self.tls(), trust_env=False,
                            headers={"Authorization": f"Bearer {token}"},
                            event_hooks={"request": [_default_api_version]})

    def add_principal(self, role: str, scope: str | None = None):
        """A new principal of the emulator's tenant with ``role`` at ``scope`` (default: the resource group
        in connection.json), as ``python -m emulator principal add`` makes one; its secret is a SecretStr."""
        from pydantic import SecretStr

        from emulator import identity

        conn = self.conn
        scope = scope or f"/subscriptions/{conn['subscription_id']}/resourceGroups/{conn['resource_group']}"
        principal, secret_file = identity.add_principal(self.state, role, scope)
        return Principal(principal.client_id, principal.object_id, SecretStr(secret_file.read_text().strip()))

    def credential(self, principal=None, secret: str | None = None):
        """azure-identity's ClientSecretCredential on the emulator's tenant (default: the Owner of the state dir)."""
        from azure.identity import ClientSecretCredential

        conn = self.conn
        client_id = principal.client_id if principal else conn["client_id"]
        if secret is None:
            secret = (principal.secret.get_secret_value() if principal
                      else self.state.client_secret.read_text().strip())
        return ClientSecretCredential(conn["tenant_id"], client_id, secret, authority=conn["arm_url"],
                                      disable_instance_discovery=True, connection_verify=conn["ca_cert"])

    def environ(self, principal) -> dict[str, str]:
        """The AZURE_* variables with which EnvironmentCredential (and the client factory) sign in as ``principal``."""
        conn = self.conn
        return {"AZURE_TENANT_ID": conn["tenant_id"], "AZURE_CLIENT_ID": principal.client_id,
                "AZURE_CLIENT_SECRET": principal.secret.get_secret_value(), "AZURE_AUTHORITY_HOST": conn["arm_url"]}

    def mint(self, scope: str, lifetime_seconds: int = 3600) -> str:
        """A token signed with the state dir's key, for a lifetime no tenant hands out (e.g. 0: expired)."""
        from emulator.tokens import Issuer

        return Issuer(self.state, self.conn["arm_url"]).issue(scope, lifetime_seconds)[0]

    def set_faults(self, **faults) -> None:
        response = self.admin("POST", "/_emulator/faults", json=faults)
        assert response.status_code == 200, response.text

    def instances(self, deployment_id: str) -> list[dict]:
        for key, value in self.admin("GET", "/_emulator/instances").json().items():
            if key.lower() == deployment_id.lower():
                return value
        return []


@pytest.fixture(scope="session")
def emulator(tmp_path_factory):
    """One emulator per test session (start-up cost); tests use unique endpoint names.

    Its GPU quota is large so tests do not compete for it; quota tests start their own emulator."""
    from emulator import process

    state_dir = tmp_path_factory.mktemp("emulator")
    process.start_detached(state_dir, ["--gpu-quota-cores", "100000"])
    handle = EmulatorHandle(state_dir)
    yield handle
    process.stop(state_dir)


@pytest.fixture
def start_emulator(tmp_path_factory):
    """Start emulators of their own (``start_emulator("--autoscale-interval", "0.3")``); stopped afterwards."""
    from emulator import process

    started = []

    def start(*args: str) -> EmulatorHandle:
        state_dir = tmp_path_factory.mktemp("emulator-own")
        process.start_detached(state_dir, list(args))
        started.append(state_dir)
        return EmulatorHandle(state_dir)

    yield start
    for state_dir in started:
        process.stop(state_dir)


@pytest.fixture
def fresh_emulator(start_emulator):
    """An emulator of its own (default quota), for restart and quota tests."""
    return start_emulator()


@pytest.fixture
def ml(emulator):
    """An ``MLClient`` for the session emulator."""
    from tasks import clients

    return clients.ml_client(emulator.settings())


@pytest.fixture
def arm(emulator):
    """A raw ARM client for the session emulator (see ``EmulatorHandle.arm_client``)."""
    with emulator.arm_client() as http:
        yield http


@pytest.fixture
def endpoint(ml, unique_name):
    """The name of a key-auth endpoint of this test's own on the session emulator; deleted afterwards."""
    from azure.ai.ml.entities import ManagedOnlineEndpoint
    from azure.core.exceptions import ResourceNotFoundError

    name = unique_name()
    ml.online_endpoints.begin_create_or_update(ManagedOnlineEndpoint(name=name)).result()
    yield name
    try:
        ml.online_endpoints.begin_delete(name).result()
    except ResourceNotFoundError:
        pass  # the test deleted it itself


@pytest.fixture
def unique_name():
    """Endpoint names are unique per region: each test takes its own."""
    import uuid

    return lambda prefix="ep": f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def fake_deployment():
    """A ManagedOnlineDeployment on the fake engine with fast probes (override any field)."""
    from azure.ai.ml.entities import Environment, ManagedOnlineDeployment, OnlineRequestSettings, ProbeSettings

    def build(endpoint: str, name: str = "blue", image: str = "local/fake-engine:1", **overrides):
        routes = {"port": 8000, "path": "/health"}
        fields = dict(
            name=name, endpoint_name=endpoint,
            environment=Environment(image=image, inference_config={
                "liveness_route": routes, "readiness_route": routes,
                "scoring_route": {"port": 8000, "path": "/"}}),
            instance_type="Standard_NC24ads_A100_v4", instance_count=1,
            request_settings=OnlineRequestSettings(request_timeout_ms=60_000, max_concurrent_requests_per_instance=4),
            readiness_probe=ProbeSettings(initial_delay=1, period=1, timeout=1, failure_threshold=15),
            liveness_probe=ProbeSettings(initial_delay=1, period=1, timeout=1, failure_threshold=3),
            environment_variables={"FAKE_ENGINE_ACCESS_LOG": "true"},
        )
        fields.update(overrides)
        return ManagedOnlineDeployment(**fields)

    return build


@pytest.fixture
def wait_for():
    """Poll until ``predicate()`` is truthy and return its value (waiting on processes, not timing them).

    An ``async def`` predicate is awaited between ``asyncio.sleep``s: ``await wait_for(predicate)``."""
    import asyncio
    import inspect
    import time

    def wait(predicate, timeout: float = 30.0, what: str = "condition"):
        if inspect.iscoroutinefunction(predicate):
            return wait_async(predicate, timeout, what)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}")

    async def wait_async(predicate, timeout: float, what: str):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = await predicate()
            if value:
                return value
            await asyncio.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}")

    return wait


@pytest.fixture
def refused():
    """True once nothing listens at an instance URL any more."""
    import httpx

    def check(url: str) -> bool:
        try:
            httpx.get(url + "/health", timeout=1)
        except httpx.TransportError:
            return True
        return False

    return check
