"""The rollout's least privilege as pure functions: which ARM actions it needs, which a set of permissions
misses (Azure's rule: wildcards, notActions per role), and how the built-in roles the docs name compare."""

from __future__ import annotations

import pytest

from emulator.identity import DEPLOYER, ROLE_DEFINITIONS, action_for, covers
from tasks.azureml.access import ML, missing_actions, required_actions
from tasks.settings import load_settings

# Built-in role definitions as Azure publishes them (the parts that matter here).
DATA_SCIENTIST = {  # "AzureML Data Scientist"
    "actions": [f"{ML}/*/read", f"{ML}/*/action", f"{ML}/*/delete", f"{ML}/*/write"],
    "notActions": [f"{ML}/delete", f"{ML}/write", f"{ML}/computes/*/write", f"{ML}/computes/*/delete",
                   f"{ML}/computes/listKeys/action", f"{ML}/listKeys/action", f"{ML}/hubs/write",
                   f"{ML}/hubs/delete", f"{ML}/featurestores/write", f"{ML}/featurestores/delete"],
}
MONITORING_CONTRIBUTOR = {"actions": ["*/read", "Microsoft.Insights/AutoscaleSettings/*"], "notActions": []}
READER = {"actions": ["*/read"], "notActions": []}
CONTRIBUTOR = {"actions": ["*"], "notActions": [  # Azure's built-in Contributor
    "Microsoft.Authorization/*/Delete", "Microsoft.Authorization/*/Write", "Microsoft.Authorization/elevateAccess/Action",
    "Microsoft.Blueprint/blueprintAssignments/write", "Microsoft.Blueprint/blueprintAssignments/delete",
    "Microsoft.Compute/galleries/share/action", "Microsoft.Purview/consents/write", "Microsoft.Purview/consents/delete",
    "Microsoft.Resources/deploymentStacks/manageDenySetting/action", "Microsoft.Subscription/cancel/action",
    "Microsoft.Subscription/enable/action"]}


def every_action() -> list[str]:
    s = load_settings(target="local")
    return [a for actions in required_actions(s).values() for a in actions]


def test_wildcards_match_any_characters_and_ignore_case():
    assert missing_actions([f"{ML}/onlineEndpoints/write"], [{"actions": ["microsoft.machinelearningservices/*"]}]) == []
    assert missing_actions([f"{ML}/read"], [READER]) == []
    assert missing_actions([f"{ML}/read"], [{"actions": [f"{ML}/*/read"]}]) == [f"{ML}/read"]  # '*' sits between two '/'


def test_not_actions_take_away_only_within_their_own_role():
    required = [f"{ML}/onlineEndpoints/delete"]
    no_delete = {"actions": ["*"], "notActions": ["*/delete"]}
    assert missing_actions(required, [no_delete]) == required
    assert missing_actions(required, [no_delete, {"actions": [f"{ML}/onlineEndpoints/*"]}]) == []


def test_sdk_permission_objects_are_read_like_dicts():
    from azure.mgmt.authorization.v2022_04_01.models import Permission

    assert missing_actions(["a/b/write", "a/b/read"], [Permission(actions=["a/*"], not_actions=["a/b/write"])]) \
        == ["a/b/write"]


def test_the_rollout_never_needs_to_delete_an_endpoint_and_needs_what_its_auth_mode_uses():
    for mode, action in [("key", "listKeys/action"), ("aml_token", "token/action"), ("aad_token", "score/action")]:
        needed = required_actions(load_settings(target="local", auth_mode=mode))["workspace"]
        assert f"{ML}/onlineEndpoints/{action}" in needed
        assert f"{ML}/onlineEndpoints/delete" not in needed
    assert required_actions(load_settings(target="local"))["resource_group"] == [
        "Microsoft.Insights/autoscalesettings/read", "Microsoft.Insights/autoscalesettings/write",
        "Microsoft.Insights/autoscalesettings/delete"]


def test_the_emulator_deployer_role_covers_the_rollout_and_reader_does_not():
    assert missing_actions(every_action(), [ROLE_DEFINITIONS[DEPLOYER]]) == []
    assert missing_actions([f"{ML}/onlineEndpoints/delete"], [ROLE_DEFINITIONS[DEPLOYER]]) != []
    missing = missing_actions(every_action(), [ROLE_DEFINITIONS["Reader"]])
    assert f"{ML}/onlineEndpoints/write" in missing and f"{ML}/read" not in missing


def test_built_in_roles_named_in_the_docs():
    """AzureML Data Scientist covers every Azure ML action the rollout takes but the workspace read itself;
    Monitoring Contributor adds that (*/read) and the autoscale settings; the image build needs more on the
    registry (Contributor there)."""
    needed = required_actions(load_settings(target="local"))
    ml_and_monitor = needed["workspace"] + needed["resource_group"]
    assert missing_actions(ml_and_monitor, [DATA_SCIENTIST]) == [
        f"{ML}/read", "Microsoft.Insights/autoscalesettings/read", "Microsoft.Insights/autoscalesettings/write",
        "Microsoft.Insights/autoscalesettings/delete"]
    assert missing_actions(ml_and_monitor, [DATA_SCIENTIST, MONITORING_CONTRIBUTOR]) == []
    assert missing_actions(needed["registry"], [DATA_SCIENTIST, MONITORING_CONTRIBUTOR]) == [
        a for a in needed["registry"] if not a.endswith("/read")]  # */read covers the reads only
    assert missing_actions(needed["registry"], [CONTRIBUTOR]) == []


@pytest.mark.parametrize("method, path, action", [
    ("GET", "/subscriptions/s/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/w",
     f"{ML}/read"),
    ("PUT", "/subscriptions/s/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/w"
            "/onlineEndpoints/e", f"{ML}/onlineEndpoints/write"),
    ("GET", "/subscriptions/s/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/w"
            "/onlineEndpoints", f"{ML}/onlineEndpoints/read"),
    ("POST", "/subscriptions/s/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/w"
             "/onlineEndpoints/e/listKeys", f"{ML}/onlineEndpoints/listKeys/action"),
    ("DELETE", "/subscriptions/s/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/w"
               "/onlineEndpoints/e/deployments/d", f"{ML}/onlineEndpoints/deployments/delete"),
    ("PUT", "/subscriptions/s/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/w"
            "/models/m/versions/1", f"{ML}/models/versions/write"),
    ("PATCH", "/subscriptions/s/resourceGroups/rg/providers/microsoft.insights/autoscalesettings/a",
     "microsoft.insights/autoscalesettings/write"),
])
def test_the_emulator_maps_requests_to_arm_actions(method, path, action):
    assert action_for(method, path)[0] == action


def test_assignment_scopes_cover_what_lies_beneath():
    assert covers("/", "/subscriptions/s")
    assert covers("/subscriptions/S/resourceGroups/RG", "/subscriptions/s/resourcegroups/rg/providers/x/y/z")
    assert not covers("/subscriptions/s/resourceGroups/rg", "/subscriptions/s/resourceGroups/rg2")
    assert not covers("/subscriptions/s/resourceGroups/rg/providers/p/workspaces/w", "/subscriptions/s/resourceGroups/rg")


def test_building_the_image_needs_acr_tasks_on_the_registry_and_a_given_image_does_not():
    building = required_actions(load_settings(target="local"))["registry"]
    assert "Microsoft.ContainerRegistry/registries/scheduleRun/action" in building
    assert "Microsoft.ContainerRegistry/registries/runs/listLogSasUrl/action" in building
    assert missing_actions(building, [READER]) == [a for a in building if not a.endswith("/read")]
    pinned = "r1emulatoracr.azurecr.io/r1-vllm@sha256:" + "a" * 64
    assert required_actions(load_settings(target="local", image=pinned))["registry"] == []
