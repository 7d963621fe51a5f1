"""Azure Monitor metrics of an endpoint, through the unmodified azure-mgmt-monitor client, from what the emulator's
gateway measured on real traffic to fake-engine deployments."""

from __future__ import annotations

import ssl
import time
import uuid
from datetime import UTC, datetime

import httpx
import pytest
from azure.ai.ml.entities import Environment, ManagedOnlineDeployment, ManagedOnlineEndpoint, ProbeSettings
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

from emulator import metrics
from tasks import clients

CHAT = {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 8}
SLOW_MS = 400
ROUTE = {"port": 8000, "path": "/health"}


def _span(seconds: float = 600) -> str:
    now = time.time()
    return "/".join(datetime.fromtimestamp(t, UTC).isoformat() for t in (now - seconds, now + 5))


@pytest.fixture(scope="module")
def scored(emulator):
    """An endpoint with a fast blue, a slow green and a red whose engine fails; 12, 12 and 6 requests sent."""
    ml = clients.ml_client(emulator.settings())
    name = f"mx-{uuid.uuid4().hex[:10]}"
    ml.online_endpoints.begin_create_or_update(ManagedOnlineEndpoint(name=name, auth_mode="key")).result()
    for colour, env in (("blue", {}), ("green", {"FAKE_ENGINE_TTFT_MS": str(SLOW_MS)}),
                        ("red", {"FAKE_ENGINE_ERROR_RATE": "1"})):
        ml.online_deployments.begin_create_or_update(ManagedOnlineDeployment(
            name=colour, endpoint_name=name, instance_type="Standard_NC24ads_A100_v4", instance_count=1,
            environment=Environment(image="local/fake-engine:1", inference_config={
                "liveness_route": ROUTE, "readiness_route": ROUTE, "scoring_route": {"port": 8000, "path": "/"}}),
            readiness_probe=ProbeSettings(initial_delay=1, period=1, timeout=1, failure_threshold=15),
            environment_variables=env)).result()
    endpoint = ml.online_endpoints.get(name)
    key = ml.online_endpoints.get_keys(name).primary_key
    verify = ssl.create_default_context(cafile=str(clients.data_plane_ca(emulator.settings())))
    with httpx.Client(headers={"Authorization": f"Bearer {key}"}, verify=verify, timeout=30, trust_env=False) as http:
        for colour, n in (("blue", 12), ("green", 12), ("red", 6)):
            for _ in range(n):
                http.post(endpoint.scoring_uri, json=CHAT, headers={"azureml-model-deployment": colour})
        assert http.post(endpoint.scoring_uri, json=CHAT, headers={"Authorization": "Bearer nope"}).status_code == 401
    yield clients.monitor_client(emulator.settings()), endpoint
    ml.online_endpoints.begin_delete(name).result()


def series(response) -> dict[tuple[str, ...], list]:
    """(dimension values) -> data points of the response's one metric."""
    (metric,) = response.value
    return {tuple(m.value for m in ts.metadatavalues): ts.data for ts in metric.timeseries}


def test_latency_percentiles_per_deployment_come_from_gateway_traffic(scored):
    monitor, endpoint = scored
    found = monitor.metrics.list(endpoint.id, timespan=_span(), interval="FULL", metricnames="RequestLatency_P95",
                                 aggregation="Average", filter="deployment eq '*'")
    assert found.value[0].name.value == "RequestLatency_P95" and found.value[0].unit == "MilliSeconds"
    p95 = {dims[0]: data[0].average for dims, data in series(found).items()}
    assert set(p95) == {"blue", "green", "red"}
    assert p95["green"] >= SLOW_MS > p95["blue"]
    assert found.namespace == "Microsoft.MachineLearningServices/workspaces/onlineEndpoints"


def test_requests_by_status_class_and_code(scored):
    monitor, endpoint = scored
    found = monitor.metrics.list(endpoint.id, timespan=_span(), interval="FULL", metricnames="RequestsPerMinute",
                                 aggregation="Total", filter="deployment eq '*' and statusCodeClass eq '*'")
    totals = {dims: data[0].total for dims, data in series(found).items()}
    assert totals == {("blue", "2xx"): 12, ("green", "2xx"): 12, ("red", "4xx"): 6}  # a model's 500 is Azure's 424
    codes = monitor.metrics.list(endpoint.id, timespan=_span(), interval="FULL", metricnames="RequestsPerMinute",
                                 aggregation="Total", filter="deployment eq 'red' and statusCode eq '*'")
    assert {dims: data[0].total for dims, data in series(codes).items()} == {("red", "424"): 6}


def test_filter_by_deployment_and_time_grains(scored):
    monitor, endpoint = scored
    found = monitor.metrics.list(endpoint.id, timespan=_span(600), interval="PT1M", metricnames="RequestsPerMinute",
                                 aggregation="Total,Average", filter="deployment eq 'blue'")
    ((dims, data),) = series(found).items()
    assert dims == ("blue",) and found.interval == "PT1M"
    assert len(data) == 11 and sum(p.total for p in data) == 12  # 10 minutes and 5 s: 11 grains
    assert all(p.average == p.total for p in data)  # one-minute grains: per minute = total
    whole = monitor.metrics.list(endpoint.id, timespan=_span(), interval="FULL", metricnames="RequestsPerMinute")
    assert series(whole)[()][0].total == 30  # no filter: one series, every routed request (the 401 named none)


def test_bad_metric_name_answers_azures_error(scored):
    monitor, endpoint = scored
    with pytest.raises(HttpResponseError) as err:
        monitor.metrics.list(endpoint.id, metricnames="GpuTemperature")
    assert err.value.status_code == 400 and err.value.error.code == "BadRequest"
    assert err.value.error.message.startswith("Failed to find metric configuration for provider: "
                                              "Microsoft.MachineLearningServices, resource Type: "
                                              "workspaces/onlineEndpoints, metric: GpuTemperature, Valid metrics: ")
    with pytest.raises(HttpResponseError) as err:
        monitor.metrics.list(endpoint.id, metricnames="RequestLatency_P95", filter="statusCode eq '*'")
    assert err.value.status_code == 400 and "does not support requested dimension" in err.value.error.message


def test_metrics_of_a_missing_endpoint_are_not_found(scored):
    monitor, endpoint = scored
    with pytest.raises(ResourceNotFoundError):
        monitor.metrics.list(endpoint.id.rsplit("/", 1)[0] + "/nothing-here", metricnames="RequestsPerMinute")


def test_query_parsing_units():
    assert metrics.parse_filter("deployment eq 'a' or deployment eq 'b' and statusCode eq '*'") == {
        "deployment": {"a", "b"}, "statuscode": None}
    with pytest.raises(metrics.MetricsError):
        metrics.parse_filter("deployment eq 'a' or statusCode eq '500'")
    assert metrics.duration_s("PT1H30M") == 5400 and metrics.iso_duration(5400) == "PT1H30M"
    assert metrics.timespan("2026-01-01T00:00:00Z/PT10M", 0) == (1767225600.0, 1767226200.0)
    assert metrics._percentile([1, 2, 3, 4], 50) == 2.5


def test_the_request_log_is_bounded():
    log = metrics.RequestLog(max_records=3)
    for status in (200, 200, 500, 424):
        log.record("EP", "blue", status, 5.0)
    assert [r.status for r in log.between("ep", 0, time.time() + 1)] == [200, 500, 424]
