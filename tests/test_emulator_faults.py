"""Faults on purpose: throttling and server errors (the SDK's retries must cope), provisioning that
fails, provisioning that is slow; the admin route refuses bad input and callers without the secret."""

from __future__ import annotations

import httpx
import pytest
from azure.ai.ml.entities import ManagedOnlineEndpoint
from azure.core.exceptions import HttpResponseError

from tasks import clients


@pytest.fixture
def faults(emulator):
    yield emulator
    emulator.set_faults()  # back to none, whatever the test did


@pytest.fixture
def workspace_get(faults):
    """A raw workspace GET (no SDK retries), so each injected answer is seen as served."""
    settings = faults.settings()
    token = clients.credential(settings).get_token(faults.conn["arm_url"] + "/.default").token
    url = (f"{faults.conn['arm_url']}/subscriptions/{settings.subscription_id}/resourceGroups/rg/providers/"
           "Microsoft.MachineLearningServices/workspaces/ws")
    with httpx.Client(headers={"Authorization": f"Bearer {token}"}, verify=faults.conn["ca_cert"]) as http:
        yield lambda: http.get(url)


def test_error_statuses_with_retry_after(faults, workspace_get):
    faults.set_faults(fail_next=3, statuses=[429, 500, 503], retry_after=7)
    answers = [workspace_get() for _ in range(4)]
    assert [a.status_code for a in answers] == [429, 500, 503, 200]
    assert answers[0].headers["Retry-After"] == "7" and answers[2].headers["Retry-After"] == "7"
    assert "Retry-After" not in answers[1].headers
    assert answers[0].json()["error"]["code"] == "TooManyRequests"


def test_error_rate_is_a_reproducible_fraction(faults, workspace_get):
    faults.set_faults(error_rate=0.5, statuses=[500], seed=7)
    first = [workspace_get().status_code for _ in range(20)]
    faults.set_faults(error_rate=0.5, statuses=[500], seed=7)
    assert [workspace_get().status_code for _ in range(20)] == first
    assert 3 <= first.count(500) <= 17


def test_the_sdk_retries_through_throttling_and_server_errors(faults):
    ml = clients.ml_client(faults.settings())
    faults.set_faults(fail_next=2, statuses=[429, 503], retry_after=0.1)
    assert ml.workspaces.get("ws-r1").location == "swedencentral"
    assert faults.admin("GET", "/_emulator/faults").json()["fail_next"] == 0  # both errors were served


def test_failing_provisioning(faults, unique_name, fake_deployment):
    ml = clients.ml_client(faults.settings())
    name = unique_name()
    ml.online_endpoints.begin_create_or_update(ManagedOnlineEndpoint(name=name)).result()
    faults.set_faults(fail_provisioning=["doomed"])
    with pytest.raises(HttpResponseError, match="injected fault"):
        ml.online_deployments.begin_create_or_update(fake_deployment(name, "doomed")).result()
    assert ml.online_deployments.get("doomed", name).provisioning_state.lower() == "failed"
    ok = ml.online_deployments.begin_create_or_update(fake_deployment(name, "fine")).result()
    assert ok.provisioning_state.lower() == "succeeded"
    faults.set_faults()
    again = ml.online_deployments.begin_create_or_update(fake_deployment(name, "doomed")).result()
    assert again.provisioning_state.lower() == "succeeded"  # a re-PUT retries provisioning
    ml.online_endpoints.begin_delete(name).result()


def test_slow_provisioning_keeps_the_deployment_creating(faults, unique_name, fake_deployment):
    ml = clients.ml_client(faults.settings())
    name = unique_name()
    ml.online_endpoints.begin_create_or_update(ManagedOnlineEndpoint(name=name)).result()
    faults.set_faults(provisioning_delay_seconds=2)
    poller = ml.online_deployments.begin_create_or_update(fake_deployment(name, "slow"))
    during = ml.online_deployments.get("slow", name)
    assert during.provisioning_state.lower() == "creating"
    assert faults.instances(during.id) == []  # nothing started yet
    assert not poller.done()
    assert poller.result().provisioning_state.lower() == "succeeded"
    ml.online_endpoints.begin_delete(name).result()


def test_faults_route_validates_and_needs_the_secret(faults):
    bad = faults.admin("POST", "/_emulator/faults", json={"error_rate": 2, "statuses": [418]})
    assert bad.status_code == 400
    message = bad.json()["error"]["message"]
    assert "error_rate" in message and "statuses" in message
    assert faults.admin("GET", "/_emulator/faults").json()["error_rate"] == 0  # unchanged
    anonymous = httpx.post(faults.conn["arm_url"] + "/_emulator/faults", json={"fail_next": 5},
                           verify=faults.conn["ca_cert"])
    assert anonymous.status_code == 401
    assert faults.admin("GET", "/_emulator/faults").json()["fail_next"] == 0
