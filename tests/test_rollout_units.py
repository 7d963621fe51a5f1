"""Small pure pieces of the rollout that the scenario tests lean on."""

from __future__ import annotations

from azure.ai.ml._restclient.arm_ml_service.models._enums import DeploymentProvisioningState

from tasks.azureml.deployment import state_name
from tests.rollout_support import knobs


def test_state_name_reads_the_sdk_enum_as_azure_spells_it():
    assert state_name(DeploymentProvisioningState.FAILED) == "Failed"
    assert state_name("Creating") == "Creating" and state_name(None) == "Unknown"


def test_knobs_become_fake_engine_variables():
    assert knobs(error_rate=0.3, never_ready="true") == (
        '{"FAKE_ENGINE_ERROR_RATE": "0.3", "FAKE_ENGINE_NEVER_READY": "true"}')
