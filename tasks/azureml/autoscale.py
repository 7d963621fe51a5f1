"""Azure Monitor autoscale settings for a serving deployment, built from the settings' policy.

Scale out on GPU utilisation or on p95 request latency, scale in only when the GPU is idle; the
setting targets the deployment's ARM id, as Azure ML's autoscale guide does. ``enabled=True`` is
always sent: azure-mgmt-monitor defaults ``enabled`` to False in both ``AutoscaleSettingResource``
and ``AutoscaleSettingResourcePatch``, so a setting built without it would be sent disabled.
"""

from __future__ import annotations

from datetime import timedelta

from azure.mgmt.monitor.models import (
    AutoscaleProfile,
    AutoscaleSettingResource,
    MetricTrigger,
    ScaleAction,
    ScaleCapacity,
    ScaleRule,
)

from tasks.settings import Autoscale

DEPLOYMENT_METRIC_NAMESPACE = "microsoft.machinelearningservices/workspaces/onlineendpoints/deployments"


def autoscale_name(endpoint: str, deployment: str) -> str:
    return f"{endpoint}-{deployment}-autoscale"


def _rule(
    target: str, metric: str, operator: str, threshold: float, direction: str, policy: Autoscale
) -> ScaleRule:
    cooldown = policy.scale_out_cooldown_minutes if direction == "Increase" else policy.scale_in_cooldown_minutes
    return ScaleRule(
        metric_trigger=MetricTrigger(
            metric_name=metric,
            metric_namespace=DEPLOYMENT_METRIC_NAMESPACE,
            metric_resource_uri=target,
            time_grain=timedelta(minutes=1),
            statistic="Average",
            time_window=timedelta(minutes=policy.window_minutes),
            time_aggregation="Average",
            operator=operator,
            threshold=threshold,
        ),
        scale_action=ScaleAction(
            direction=direction, type="ChangeCount", value="1", cooldown=timedelta(minutes=cooldown)
        ),
    )


def build_autoscale(
    policy: Autoscale, deployment_id: str, location: str, tags: dict[str, str] | None = None
) -> AutoscaleSettingResource:
    """The full autoscale setting for one deployment (its ARM id is the target resource)."""
    rules = [
        _rule(deployment_id, "GpuUtilizationPercentage", "GreaterThan", policy.gpu_scale_out_percent, "Increase", policy),
        _rule(deployment_id, "RequestLatency_P95", "GreaterThan", policy.latency_p95_scale_out_ms, "Increase", policy),
        _rule(deployment_id, "GpuUtilizationPercentage", "LessThan", policy.gpu_scale_in_percent, "Decrease", policy),
    ]
    profile = AutoscaleProfile(
        name="default",
        capacity=ScaleCapacity(
            minimum=str(policy.minimum), maximum=str(policy.maximum), default=str(policy.default)
        ),
        rules=rules,
    )
    return AutoscaleSettingResource(
        location=location,
        profiles=[profile],
        enabled=True,
        target_resource_uri=deployment_id,
        tags=tags or {},
    )
