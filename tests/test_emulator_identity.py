"""The emulator as an Entra ID tenant and ARM's RBAC: azure-identity's own credentials sign in to it,
tokens keep their audiences apart, and principals can do what their role allows and nothing more."""

from __future__ import annotations

import json
import ssl
import subprocess
import sys

import httpx
import jwt
import pytest
from azure.ai.ml.entities import ManagedOnlineEndpoint
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ResourceNotFoundError

from emulator.layout import StateDir
from tasks import clients
from tests.rollout_support import REPO_ROOT, fast_env, run_in_process

ML = "Microsoft.MachineLearningServices/workspaces"


def ws_url(conn: dict) -> str:
    return (f"/subscriptions/{conn['subscription_id']}/resourceGroups/{conn['resource_group']}"
            f"/providers/Microsoft.MachineLearningServices/workspaces/{conn['workspace']}")


def token_request(emulator, tenant: str | None = None, **form: str) -> httpx.Response:
    conn = emulator.conn
    body = {"grant_type": "client_credentials", "client_id": conn["client_id"],
            "client_secret": emulator.state.client_secret.read_text().strip(),
            "scope": "https://ml.azure.com/.default", **form}
    return httpx.post(f"{conn['arm_url']}/{tenant or conn['tenant_id']}/oauth2/v2.0/token", data=body,
                      verify=emulator.tls(), trust_env=False)


# ---- Entra ID: discovery and client-credentials tokens ------------------------------------------

def test_openid_configuration_names_https_endpoints_under_the_tenant(emulator):
    conn = emulator.conn
    tenant, url = conn["tenant_id"], conn["arm_url"]
    config = httpx.get(f"{url}/{tenant}/v2.0/.well-known/openid-configuration", verify=emulator.tls(),
                       trust_env=False).json()
    assert config["token_endpoint"] == f"{url}/{tenant}/oauth2/v2.0/token"
    assert config["authorization_endpoint"].startswith(f"{url}/{tenant}/")
    assert config["issuer"] == f"{url}/{tenant}/v2.0"
    unknown = httpx.get(f"{url}/not-a-tenant/v2.0/.well-known/openid-configuration", verify=emulator.tls(),
                        trust_env=False)
    assert unknown.status_code == 400 and "AADSTS90002" in unknown.json()["error_description"]


def test_client_secret_credential_gets_tokens_and_an_ml_client_works(emulator):
    conn = emulator.conn
    credential = clients.credential(emulator.settings())
    from azure.identity import ClientSecretCredential

    assert isinstance(credential, ClientSecretCredential)
    token = credential.get_token(conn["arm_url"] + "/.default")
    claims = jwt.decode(token.token, options={"verify_signature": False})
    assert claims["tid"] == conn["tenant_id"] and claims["appid"] == conn["client_id"]
    assert claims["aud"] == conn["arm_url"] and claims["iss"] == f"{conn['arm_url']}/{conn['tenant_id']}/v2.0"
    assert 3000 < token.expires_on - claims["iat"] <= 3600
    assert clients.ml_client(emulator.settings()).workspaces.get(conn["workspace"]).location == "swedencentral"


def test_environment_and_default_credentials_work_from_the_azure_variables(emulator, monkeypatch):
    from azure.identity import DefaultAzureCredential, EnvironmentCredential

    deployer = emulator.add_principal("AzureML Endpoint Deployer")
    for name, value in emulator.environ(deployer).items():
        monkeypatch.setenv(name, value)
    ca, scope = emulator.conn["ca_cert"], emulator.conn["arm_url"] + "/.default"
    for credential in (EnvironmentCredential(disable_instance_discovery=True, connection_verify=ca),
                       DefaultAzureCredential(disable_instance_discovery=True, connection_verify=ca)):
        claims = jwt.decode(credential.get_token(scope).token, options={"verify_signature": False})
        assert claims["oid"] == deployer.object_id
    # the client factory signs in as the principal the AZURE_* variables name (they name its tenant)
    ml = clients.ml_client(emulator.settings())
    assert ml.workspaces.get(emulator.conn["workspace"]).location == "swedencentral"
    claims = jwt.decode(clients.credential(emulator.settings()).get_token(scope).token,
                        options={"verify_signature": False})
    assert claims["oid"] == deployer.object_id


def test_a_wrong_secret_is_refused_as_entra_does(emulator):
    with pytest.raises(ClientAuthenticationError, match="AADSTS7000215") as err:
        emulator.credential(secret="not-the-secret").get_token("https://ml.azure.com/.default")
    assert "not-the-secret" not in str(err.value)
    wrong = token_request(emulator, client_secret="not-the-secret")
    assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"  # Entra answers 401 here
    assert wrong.json()["error_codes"] == [7000215]


@pytest.mark.parametrize("form, tenant, status, error, code", [
    ({"client_id": "00000000-1111-2222-3333-444444444444"}, None, 400, "unauthorized_client", "AADSTS700016"),
    ({}, "00000000-0000-0000-0000-00000000beef", 400, "invalid_request", "AADSTS90002"),
    ({"scope": "https://vault.azure.net/.default"}, None, 400, "invalid_scope", "AADSTS70011"),
    ({"grant_type": "password"}, None, 400, "unsupported_grant_type", "AADSTS70003"),
])
def test_token_requests_are_refused_as_entra_refuses_them(emulator, form, tenant, status, error, code):
    response = token_request(emulator, tenant, **form)
    assert response.status_code == status
    assert response.json()["error"] == error and response.json()["error_description"].startswith(code + ":")


def test_the_token_endpoint_answers_what_msal_needs(emulator):
    body = token_request(emulator).json()
    assert body["token_type"] == "Bearer" and 3590 <= body["expires_in"] <= 3600 and body["access_token"]


# ---- ARM: audiences, 401, 403 ---------------------------------------------------------------------

def test_audiences_stay_apart(emulator, ml, unique_name, fake_deployment):
    conn = emulator.conn
    credential = emulator.credential()
    management = credential.get_token(conn["arm_url"] + "/.default").token
    scoring = credential.get_token("https://ml.azure.com/.default").token
    with emulator.arm_client() as arm:
        arm.headers["Authorization"] = f"Bearer {scoring}"
        assert arm.get(ws_url(conn)).status_code == 401  # a scoring token cannot manage
        arm.headers["Authorization"] = f"Bearer {management}"
        assert arm.get(ws_url(conn)).status_code == 200
    name = unique_name("aud")
    ml.online_endpoints.begin_create_or_update(ManagedOnlineEndpoint(name=name, auth_mode="aad_token")).result()
    try:
        ml.online_deployments.begin_create_or_update(fake_deployment(name, "blue")).result()
        url = ml.online_endpoints.get(name).scoring_uri.removesuffix("/score") + "/v1/completions"
        tls = ssl.create_default_context(cafile=conn["ca_cert"])

        def score(token: str) -> int:
            return httpx.post(url, json={"model": "m", "prompt": "hi", "max_tokens": 2}, verify=tls, trust_env=False,
                              headers={"Authorization": f"Bearer {token}", "azureml-model-deployment": "blue"}
                              ).status_code

        assert score(management) == 401  # a management token cannot score
        assert score(scoring) == 200
    finally:
        ml.online_endpoints.begin_delete(name).result()


def test_401_carries_the_bearer_challenge(emulator):
    conn = emulator.conn
    response = httpx.get(conn["arm_url"] + ws_url(conn), verify=emulator.tls(), trust_env=False)
    assert response.status_code == 401
    challenge = response.headers["WWW-Authenticate"]
    assert challenge.startswith(f'Bearer authorization_uri="{conn["arm_url"]}/{conn["tenant_id"]}"')
    assert 'error="invalid_token"' in challenge


def test_authentication_comes_before_an_injected_fault(fresh_emulator):
    fresh_emulator.set_faults(fail_next=1, statuses=[503])
    conn = fresh_emulator.conn
    anonymous = httpx.get(conn["arm_url"] + ws_url(conn), verify=fresh_emulator.tls(), trust_env=False)
    assert anonymous.status_code == 401  # not the fault: an anonymous caller learns nothing
    with fresh_emulator.arm_client() as arm:
        assert arm.get(ws_url(conn)).status_code == 503  # the fault was still pending
        assert arm.get(ws_url(conn)).status_code == 200


def test_a_reader_can_read_but_not_write(emulator, unique_name):
    conn = emulator.conn
    reader = emulator.add_principal("Reader")
    endpoint = f"{ws_url(conn)}/onlineEndpoints/{unique_name('reader')}"
    with emulator.arm_client(emulator.credential(reader)) as arm:
        assert arm.get(ws_url(conn)).status_code == 200
        put = arm.put(endpoint, json={"location": conn["location"], "identity": {"type": "SystemAssigned"},
                                      "properties": {"authMode": "Key"}})
    assert put.status_code == 403
    error = put.json()["error"]
    assert error["code"] == "AuthorizationFailed"
    assert (f"The client '{reader.object_id}' with object id '{reader.object_id}' does not have authorization to "
            f"perform action '{ML}/onlineEndpoints/write' over scope '{endpoint}'") in error["message"]


def test_a_deployer_can_create_but_not_delete_an_endpoint(emulator, unique_name):
    from azure.ai.ml import MLClient

    deployer = emulator.add_principal("AzureML Endpoint Deployer")
    owner_ml = clients.ml_client(emulator.settings())
    name = unique_name("deployer")
    ml = MLClient(emulator.credential(deployer), owner_ml.subscription_id, owner_ml.resource_group_name,
                  owner_ml.workspace_name, cloud=owner_ml._cloud, connection_verify=emulator.conn["ca_cert"])
    try:
        ml.online_endpoints.begin_create_or_update(ManagedOnlineEndpoint(name=name, auth_mode="key")).result()
        assert ml.online_endpoints.get_keys(name).primary_key
        with pytest.raises(HttpResponseError) as err:
            ml.online_endpoints.begin_delete(name).result()
        assert err.value.status_code == 403 and "AuthorizationFailed" in str(err.value)
        assert f"{ML}/onlineEndpoints/delete" in str(err.value)
        assert owner_ml.online_endpoints.get(name).name == name  # still there
    finally:
        owner_ml.online_endpoints.begin_delete(name).result()


def test_the_callers_permissions_through_the_authorization_sdk(emulator, monkeypatch):
    conn = emulator.conn
    workspace_only = emulator.add_principal("Reader", scope=ws_url(conn))
    for name, value in emulator.environ(workspace_only).items():
        monkeypatch.setenv(name, value)
    client = clients.authorization_client(emulator.settings())
    at_workspace = [p.as_dict() for p in client.permissions.list_for_resource(
        conn["resource_group"], "Microsoft.MachineLearningServices", "", "workspaces", conn["workspace"])]
    assert at_workspace == [{"actions": ["*/read"], "not_actions": [], "data_actions": [], "not_data_actions": []}]
    assert list(client.permissions.list_for_resource_group(conn["resource_group"])) == []  # assigned below it
    with emulator.arm_client() as arm:
        other = arm.get(f"{ws_url(conn)}/providers/Microsoft.Authorization/permissions",
                        params={"api-version": "2015-07-01"})
    assert other.status_code == 400 and other.json()["error"]["code"] == "InvalidApiVersionParameter"


def test_principal_add_on_the_command_line(tmp_path):
    state = StateDir(tmp_path / "emu")
    proc = subprocess.run([sys.executable, "-m", "emulator", "principal", "add", "--state-dir", str(state.root),
                           "--role", "Reader"], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    added = json.loads(proc.stdout)
    secret_file = state.root / "secrets" / "clients" / added["client_id"]
    assert added["role"] == "Reader" and added["secret_file"] == str(secret_file)
    assert oct(secret_file.stat().st_mode & 0o777) == "0o600" and oct(state.identity.stat().st_mode & 0o777) == "0o600"
    identity = state.identity.read_text()
    assert secret_file.read_text().strip() not in identity  # only its hash
    assert state.client_secret.read_text().strip() not in identity
    bad = subprocess.run([sys.executable, "-m", "emulator", "principal", "add", "--state-dir", str(state.root),
                          "--role", "Reader", "--scope", "relative"], cwd=REPO_ROOT, capture_output=True, text=True)
    assert bad.returncode == 2 and "scope" in bad.stderr


# ---- the rollout's preflight ------------------------------------------------------------------------

def test_a_rollout_as_reader_is_refused_naming_the_missing_action(emulator, prefect_api, monkeypatch, tmp_path,
                                                                  unique_name):
    from tasks.rollout.outcome import cli_outcome

    reader = emulator.add_principal("Reader")
    endpoint = unique_name("as-reader")
    env = {**fast_env(emulator.state_dir, tmp_path / "reports", endpoint), **emulator.environ(reader)}
    status, err = run_in_process(monkeypatch, env)
    assert status == "failed" and type(err).__name__ == "Refused", err
    assert f"{ML}/onlineEndpoints/write" in str(err) and f"{ML}/onlineEndpoints/deployments/write" in str(err)
    assert f"{ML}/onlineEndpoints/delete" not in str(err)  # never asked for
    assert cli_outcome(err)[0] == 2
    monkeypatch.delenv("AZURE_CLIENT_ID")
    with pytest.raises(ResourceNotFoundError):
        clients.ml_client(emulator.settings()).online_endpoints.get(endpoint)  # nothing was created


def test_a_rollout_as_deployer_is_allowed_everything_it_does(emulator, prefect_api, monkeypatch, tmp_path,
                                                             unique_name):
    """The least role is enough: every ARM call of a whole rollout (keys, autoscale, model, environment)
    is within "AzureML Endpoint Deployer", which may not delete an endpoint."""
    deployer = emulator.add_principal("AzureML Endpoint Deployer")
    endpoint = unique_name("as-deployer")
    env = {**fast_env(emulator.state_dir, tmp_path / "reports", endpoint), **emulator.environ(deployer)}
    try:
        status, result = run_in_process(monkeypatch, env)
        assert status == "completed", result
        assert result["outcome"] == "promoted", result
    finally:
        monkeypatch.delenv("AZURE_CLIENT_ID")
        clients.ml_client(emulator.settings()).online_endpoints.begin_delete(endpoint).result()
