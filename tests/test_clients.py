"""The client factory: the only place that knows the target. Local clients come from a running
emulator's connection.json; Azure clients from the public cloud; tokens come from the emulator's Entra ID
tenant through azure-identity's own ClientSecretCredential."""

from __future__ import annotations

import json
import os

import pytest
from pydantic import SecretStr

from emulator import process
from emulator.certs import ensure_certificates
from emulator.layout import StateDir
from tasks import clients
from tasks.settings import load_settings


@pytest.fixture
def pretend_emulator(tmp_path):
    """A state dir whose lock this test process holds, with a connection.json naming it: enough for
    building clients (MLClient makes no HTTP call at construction)."""

    def make(port: int):
        state = StateDir(tmp_path / f"state-{port}")
        state.root.mkdir()
        (state.root / "secrets").mkdir()
        state.client_secret.write_text("s3cret-value")
        ensure_certificates(state)
        state.connection.write_text(json.dumps({
            "arm_url": f"https://127.0.0.1:{port}", "ca_cert": str(state.ca_cert),
            "subscription_id": "sub", "resource_group": "rg", "workspace": "ws", "location": "swedencentral",
            "scoring_base": f"https://127.0.0.1:{port + 1}", "pid": os.getpid(),
            "tenant_id": "11111111-2222-3333-4444-555555555555", "client_id": "c1"}))
        return state

    locks = []

    def running(port: int):
        state = make(port)
        lock = process.hold_lock(state)
        lock.__enter__()
        locks.append(lock)
        return load_settings(target="local", emulator_state_dir=state.root)

    yield running
    for lock in locks:
        lock.__exit__(None, None, None)


def test_local_ml_client_uses_custom_cloud_metadata_unique_per_url(pretend_emulator):
    from azure.ai.ml._azure_environments import _environments

    first = clients.ml_client(pretend_emulator(41001))
    second = clients.ml_client(pretend_emulator(41011))
    assert first._base_url == "https://127.0.0.1:41001"
    assert second._base_url == "https://127.0.0.1:41011"  # a second URL is not shadowed by the first
    clouds = [c for c in _environments.values() if c.get("resource_manager", "").startswith("https://127.0.0.1:410")]
    assert len(clouds) == 2
    for cloud in clouds:
        assert {"azure_portal", "resource_manager", "active_directory", "aml_resource_id", "storage_endpoint",
                "registry_discovery_endpoint"} <= cloud.keys()
    from azure.ai.ml.constants._common import LROConfigurations

    assert LROConfigurations.POLL_INTERVAL == clients.LOCAL_POLL_INTERVAL_S


def test_local_data_plane_ca_and_monitor_client(pretend_emulator):
    settings = pretend_emulator(41021)
    assert clients.data_plane_ca(settings).endswith("ca.pem")
    monitor = clients.monitor_client(settings)
    assert monitor._client._base_url == "https://127.0.0.1:41021"
    from azure.identity import ClientSecretCredential

    credential = clients.credential(settings)
    assert isinstance(credential, ClientSecretCredential)
    assert credential._client_id == "c1" and credential._tenant_id == "11111111-2222-3333-4444-555555555555"
    assert clients.authorization_client(settings)._client._base_url == "https://127.0.0.1:41021"


def test_the_secret_is_unwrapped_only_for_the_credential(pretend_emulator, monkeypatch):
    settings = pretend_emulator(41031)
    client_id, secret = clients._local_principal(clients.connection(settings))
    assert client_id == "c1" and isinstance(secret, SecretStr) and "s3cret-value" not in repr(secret)
    # the AZURE_* variables count only when they name this emulator's tenant (never a real one's)
    monkeypatch.setenv("AZURE_CLIENT_ID", "other")
    monkeypatch.setenv("AZURE_CLIENT_SECRET", "other-secret")
    monkeypatch.setenv("AZURE_TENANT_ID", "a-real-tenant")
    assert clients._local_principal(clients.connection(settings))[0] == "c1"
    monkeypatch.setenv("AZURE_TENANT_ID", "11111111-2222-3333-4444-555555555555")
    assert clients._local_principal(clients.connection(settings))[0] == "other"


def test_azure_target_uses_the_public_cloud(monkeypatch):
    settings = load_settings(target="azure", subscription_id="11111111-1111-1111-1111-111111111111")
    from azure.identity import DefaultAzureCredential

    assert isinstance(clients.credential(settings), DefaultAzureCredential)
    assert clients.data_plane_ca(settings) is True
    assert clients.ml_client(settings)._base_url == "https://management.azure.com"
    assert clients.monitor_client(settings)._client._base_url.rstrip("/") == "https://management.azure.com"


def test_no_running_emulator_is_a_clear_error(tmp_path):
    settings = load_settings(target="local", emulator_state_dir=tmp_path / "nothing")
    with pytest.raises(clients.EmulatorUnavailable, match="python -m emulator --state-dir"):
        clients.ml_client(settings)


def test_stale_connection_file_after_a_crash_is_not_trusted(tmp_path):
    state = StateDir(tmp_path)
    state.connection.write_text(json.dumps({"arm_url": "https://127.0.0.1:1", "pid": 999999}))
    with pytest.raises(clients.EmulatorUnavailable):
        clients.connection(load_settings(target="local", emulator_state_dir=tmp_path))


def test_credential_gets_and_caches_emulator_tokens(emulator):
    from azure.core.exceptions import ClientAuthenticationError

    settings = emulator.settings()
    credential = clients.credential(settings)
    scope = emulator.conn["arm_url"] + "/.default"
    token = credential.get_token(scope)
    assert credential.get_token(scope).token == token.token  # MSAL's cache: no second request
    assert credential.get_token("https://ml.azure.com/.default").token != token.token
    with pytest.raises(ClientAuthenticationError, match="AADSTS70011") as err:
        credential.get_token("https://vault.azure.net/.default")
    assert settings.emulator_state_dir.joinpath("secrets/client_secret").read_text().strip() not in str(err.value)


def test_ensure_emulator_starts_one_once(tmp_path):
    settings = load_settings(target="local", emulator_state_dir=tmp_path / "emu", region="swedencentral")
    try:
        first = clients.ensure_emulator(settings)
        again = clients.ensure_emulator(settings)
        assert first == again
        assert clients.ml_client(settings).workspaces.get("ws-r1").location == "swedencentral"
    finally:
        process.stop(tmp_path / "emu")
    assert process.running_pid(StateDir(tmp_path / "emu")) is None


def test_concurrent_ensure_emulator_calls_share_one_emulator(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    settings = load_settings(target="local", emulator_state_dir=tmp_path / "race")
    try:
        with ThreadPoolExecutor(3) as pool:
            connections = list(pool.map(lambda _: clients.ensure_emulator(settings), range(3)))
        assert len({c.arm_url for c in connections}) == 1
    finally:
        process.stop(tmp_path / "race")


def test_an_emulator_started_before_the_entra_tenant_is_a_clear_error(pretend_emulator):
    settings = pretend_emulator(9100)
    path = StateDir(settings.emulator_state_dir).connection
    old = {k: v for k, v in json.loads(path.read_text()).items() if k not in ("tenant_id", "client_id")}
    path.write_text(json.dumps(old))
    with pytest.raises(clients.EmulatorUnavailable, match="predates its Entra ID tenant; restart it"):
        clients.ml_client(settings)
