"""The emulator acts on autoscale settings: rules evaluated over sampled engine metrics change the
deployment's instance count, within the profile's bounds, honouring cooldowns and quota."""

from __future__ import annotations

import math
import ssl
import threading

import httpx
import pytest
from azure.ai.ml.entities import ManagedOnlineEndpoint
from azure.mgmt.monitor.models import (
    AutoscaleProfile, AutoscaleSettingResource, MetricTrigger, ScaleAction, ScaleCapacity, ScaleRule,
)

from emulator.autoscaler import Sample, decide, metric_value, parse_metrics, quantile_ms
from tasks import clients

METRICS = """# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{model_name="m"} 0.75
vllm:request_success_total{model_name="m",finished_reason="stop"} 7
vllm:request_success_total{model_name="m",finished_reason="length"} 3
vllm:e2e_request_latency_seconds_bucket{model_name="m",le="0.5"} 4
vllm:e2e_request_latency_seconds_bucket{model_name="m",le="1.0"} 9
vllm:e2e_request_latency_seconds_bucket{model_name="m",le="+Inf"} 10
"""


def rule(metric: str, operator: str, threshold: float, direction: str, window: str = "PT5M",
         cooldown: str = "PT5M", aggregation: str = "Average", value: str = "1", kind: str = "ChangeCount") -> dict:
    return {"metricTrigger": {"metricName": metric, "operator": operator, "threshold": threshold,
                              "timeWindow": window, "timeAggregation": aggregation},
            "scaleAction": {"direction": direction, "type": kind, "value": value, "cooldown": cooldown}}


def samples(*utilization: float, start: float = 1000.0) -> list[Sample]:
    return [Sample(start + i * 10, u, {}, 0.0, 1) for i, u in enumerate(utilization)]


def test_parse_metrics_sums_what_autoscale_needs():
    usage, buckets, requests = parse_metrics(METRICS)
    assert usage == 0.75 and requests == 10
    assert buckets == {0.5: 4, 1.0: 9, math.inf: 10}


def test_latency_quantiles_from_histogram_deltas():
    first = {0.5: 4, 1.0: 9, math.inf: 10}
    last = {0.5: 14, 1.0: 19, math.inf: 30}  # 20 new: 10 <= 0.5 s, 10 in 0.5-1 s
    assert quantile_ms(first, last, 0.5) == 500
    assert quantile_ms(first, last, 0.95) == 1000
    assert quantile_ms(first, first, 0.95) is None  # no traffic: no data
    assert quantile_ms({}, {1.0: 1, math.inf: 5}, 0.95) == 1000  # past the last bucket: its bound


def test_metric_values_and_aggregations():
    window = samples(10, 50, 90)
    assert metric_value("GpuUtilizationPercentage", window, "Average") == 50
    assert metric_value("GpuUtilizationPercentage", window, "Maximum") == 90
    assert metric_value("CpuUtilizationPercentage", window, "Last") == 90
    assert metric_value("DeploymentCapacity", window, "Average") == 1
    assert metric_value("GpuUtilizationPercentage", [], "Average") is None
    assert metric_value("SomethingElse", window, "Average") is None


PROFILE = {"capacity": {"minimum": "1", "maximum": "3", "default": "1"},
           "rules": [rule("GpuUtilizationPercentage", "GreaterThan", 70, "Increase"),
                     rule("GpuUtilizationPercentage", "LessThan", 20, "Decrease"),
                     rule("RequestsPerMinute", "LessThan", 1000, "Decrease")]}


def test_scale_out_when_any_increase_rule_fires():
    assert decide(PROFILE, samples(80, 90), current=1, now=1020, last_action=0) == 2
    assert decide(PROFILE, samples(80, 90), current=3, now=1020, last_action=0) == 3  # at maximum
    assert decide(PROFILE, samples(50, 60), current=2, now=1020, last_action=0) == 2  # nothing fires


def test_scale_in_only_when_every_decrease_rule_fires():
    quiet = [Sample(1000, 5, {}, 0.0, 2), Sample(1030, 5, {}, 10.0, 2)]  # 20 requests/min
    assert decide(PROFILE, quiet, current=2, now=1030, last_action=0) == 1
    busy = [Sample(1000, 5, {}, 0.0, 2), Sample(1030, 5, {}, 5000.0, 2)]  # 10000 requests/min
    assert decide(PROFILE, busy, current=2, now=1030, last_action=0) == 2
    assert decide(PROFILE, quiet, current=1, now=1030, last_action=0) == 1  # at minimum


def test_cooldown_bounds_and_action_kinds():
    assert decide(PROFILE, samples(90, 95), current=1, now=1020, last_action=1000) == 1  # cooling down
    assert decide(PROFILE, samples(50), current=5, now=1020, last_action=1000) == 3  # pulled into bounds
    exact = {"capacity": {"minimum": "1", "maximum": "10"},
             "rules": [rule("GpuUtilizationPercentage", "GreaterThanOrEqual", 0, "Increase", kind="ExactCount",
                            value="4")]}
    assert decide(exact, samples(1), current=1, now=1020, last_action=0) == 4
    percent = {"capacity": {"minimum": "1", "maximum": "10"},
               "rules": [rule("GpuUtilizationPercentage", "GreaterThan", 0, "Increase", kind="PercentChangeCount",
                              value="50")]}
    assert decide(percent, samples(5), current=3, now=1020, last_action=0) == 5  # ceil(1.5) more
    old = samples(95, start=0)  # outside the 5-minute window: no data, no action
    assert decide(PROFILE, old, current=1, now=1000, last_action=0) == 1


def test_load_scales_a_deployment_out_and_back_in(start_emulator, unique_name, fake_deployment, wait_for):
    quick_emulator = start_emulator("--autoscale-interval", "0.3")
    settings = quick_emulator.settings()
    ml = clients.ml_client(settings)
    name = unique_name()
    ml.online_endpoints.begin_create_or_update(ManagedOnlineEndpoint(name=name)).result()
    dep = ml.online_deployments.begin_create_or_update(fake_deployment(
        name, "blue", environment_variables={"FAKE_ENGINE_MAX_NUM_SEQS": "2", "FAKE_ENGINE_TTFT_MS": "4000"})).result()
    ep = ml.online_endpoints.get(name)
    ep.traffic = {"blue": 100}
    ep = ml.online_endpoints.begin_create_or_update(ep).result()

    def trigger(op: str, threshold: float, direction: str) -> ScaleRule:
        return ScaleRule(
            metric_trigger=MetricTrigger(metric_name="GpuUtilizationPercentage", metric_resource_uri=dep.id,
                                         time_grain="PT1M", statistic="Average", time_window="PT1S",
                                         time_aggregation="Average", operator=op, threshold=threshold),
            scale_action=ScaleAction(direction=direction, type="ChangeCount", value="1", cooldown="PT1S"))

    clients.monitor_client(settings).autoscale_settings.create_or_update(
        settings.resource_group, f"{name}-autoscale", AutoscaleSettingResource(
            location="swedencentral", enabled=True, target_resource_uri=dep.id,
            profiles=[AutoscaleProfile(name="default", capacity=ScaleCapacity(minimum="1", maximum="2", default="1"),
                                       rules=[trigger("GreaterThan", 70, "Increase"),
                                              trigger("LessThan", 20, "Decrease")])]))
    key = ml.online_endpoints.get_keys(name).primary_key
    url = ep.scoring_uri.removesuffix("/score") + "/v1/completions"
    ca = ssl.create_default_context(cafile=clients.data_plane_ca(settings))

    def busy() -> None:  # both sequence slots of the single instance in use for 4 s
        httpx.post(url, json={"model": "m", "prompt": "hi", "max_tokens": 2}, verify=ca, timeout=60,
                   headers={"Authorization": f"Bearer {key}"})

    load = [threading.Thread(target=busy) for _ in range(2)]
    for t in load:
        t.start()
    wait_for(lambda: ml.online_deployments.get("blue", name).instance_count == 2, what="scale-out under load")
    for t in load:
        t.join()
    assert ml.online_deployments.get("blue", name).provisioning_state.lower() in ("updating", "succeeded")
    wait_for(lambda: ml.online_deployments.get("blue", name).instance_count == 1, what="scale-in when idle")
    wait_for(lambda: len(quick_emulator.instances(dep.id)) == 1, what="the extra instance to stop")
