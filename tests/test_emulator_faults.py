"""Faults on purpose: throttling and server errors (the SDK's retries must cope), provisioning that
fails, provisioning that is slow; the admin route refuses bad input and callers without the secret."""

from __future__ import annotations

import httpx
import pytest
from azure.core.exceptions import HttpResponseError


@pytest.fixture
def faults(emulator):
    yield emulator
    emulator.set_faults()  # back to none, whatever the test did


@pytest.fixture
def workspace_get(faults, arm):
    """A raw workspace GET (no SDK retries), so each injected answer is seen as served."""
    settings = faults.settings()
    path = (f"/subscriptions/{settings.subscription_id}/resourceGroups/{settings.resource_group}/providers/"
            f"Microsoft.MachineLearningServices/workspaces/{settings.workspace}")
    return lambda: arm.get(path)


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


def test_the_sdk_retries_through_throttling_and_server_errors(faults, ml):
    faults.set_faults(fail_next=2, statuses=[429, 503], retry_after=0.1)
    assert ml.workspaces.get("ws-r1").location == "swedencentral"
    assert faults.admin("GET", "/_emulator/faults").json()["fail_next"] == 0  # both errors were served


def test_failing_provisioning(endpoint, faults, ml, fake_deployment):
    name = endpoint
    faults.set_faults(fail_provisioning=["doomed"])
    with pytest.raises(HttpResponseError, match="injected fault"):
        ml.online_deployments.begin_create_or_update(fake_deployment(name, "doomed")).result()
    assert ml.online_deployments.get("doomed", name).provisioning_state.lower() == "failed"
    ok = ml.online_deployments.begin_create_or_update(fake_deployment(name, "fine")).result()
    assert ok.provisioning_state.lower() == "succeeded"
    faults.set_faults()
    again = ml.online_deployments.begin_create_or_update(fake_deployment(name, "doomed")).result()
    assert again.provisioning_state.lower() == "succeeded"  # a re-PUT retries provisioning


def test_slow_provisioning_keeps_the_deployment_creating(endpoint, faults, ml, fake_deployment):
    name = endpoint
    faults.set_faults(provisioning_delay_seconds=2)
    poller = ml.online_deployments.begin_create_or_update(fake_deployment(name, "slow"))
    during = ml.online_deployments.get("slow", name)
    assert during.provisioning_state.lower() == "creating"
    assert faults.instances(during.id) == []  # nothing started yet
    assert not poller.done()
    assert poller.result().provisioning_state.lower() == "succeeded"


def test_faults_route_validates_and_needs_the_secret(faults):
    bad = faults.admin("POST", "/_emulator/faults", json={"error_rate": 2, "statuses": [418]})
    assert bad.status_code == 400
    message = bad.json()["error"]["message"]
    assert "error_rate" in message and "statuses" in message
    assert faults.admin("GET", "/_emulator/faults").json()["error_rate"] == 0  # unchanged
    anonymous = httpx.post(faults.conn["arm_url"] + "/_emulator/faults", json={"fail_next": 5},
                           verify=faults.tls())
    assert anonymous.status_code == 401
    assert faults.admin("GET", "/_emulator/faults").json()["fail_next"] == 0
