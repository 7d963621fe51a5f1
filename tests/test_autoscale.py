"""The autoscale setting the rollout sends: target, bounds, rules and the enabled flag
(azure-mgmt-monitor defaults ``enabled`` to False)."""

from tasks.azureml.autoscale import autoscale_name, build_autoscale
from tasks.settings import Autoscale

DEP_ID = (
    "/subscriptions/s/resourceGroups/rg/providers/Microsoft.MachineLearningServices/"
    "workspaces/ws/onlineEndpoints/r1-prod/deployments/green"
)


def test_autoscale_setting_targets_the_deployment_with_gpu_and_latency_rules():
    policy = Autoscale(minimum=1, maximum=4, default=2, gpu_scale_out_percent=75, gpu_scale_in_percent=15)
    res = build_autoscale(policy, DEP_ID, "swedencentral")
    body = res.serialize()
    assert body["properties"]["enabled"] is True
    assert body["properties"]["targetResourceUri"] == DEP_ID
    profile = body["properties"]["profiles"][0]
    assert profile["capacity"] == {"minimum": "1", "maximum": "4", "default": "2"}
    triggers = [(r["metricTrigger"]["metricName"], r["metricTrigger"]["operator"], r["metricTrigger"]["threshold"],
                 r["scaleAction"]["direction"]) for r in profile["rules"]]
    assert ("GpuUtilizationPercentage", "GreaterThan", 75, "Increase") in triggers
    assert ("GpuUtilizationPercentage", "LessThan", 15, "Decrease") in triggers
    assert any(t[0] == "RequestLatency_P95" and t[3] == "Increase" for t in triggers)
    assert {r["metricTrigger"]["metricResourceUri"] for r in profile["rules"]} == {DEP_ID}
    cooldowns = {r["scaleAction"]["direction"]: r["scaleAction"]["cooldown"] for r in profile["rules"]}
    assert cooldowns == {"Increase": "PT5M", "Decrease": "PT15M"}


def test_autoscale_name_is_per_colour():
    assert autoscale_name("r1-prod", "green") != autoscale_name("r1-prod", "blue")
