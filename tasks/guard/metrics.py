"""Azure Monitor metrics of the endpoint for one deployment over one interval (azure-mgmt-monitor).

Azure ML publishes them on the endpoint resource: ``RequestsPerMinute`` split by ``statusCode`` and
``RequestLatency_P95``, both with the dimension ``deployment``. One data point for the whole interval
(``interval=FULL``), so any guard interval reads the same way.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from tasks.guard.judge import Sample


def _timespan(start: float, end: float) -> str:
    return "/".join(datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z") for t in (start, end))


def _points(response: Any) -> list[tuple[dict[str, str], Any]]:
    """(dimension values, the one data point) of each time series of the response's one metric."""
    found = []
    for metric in response.value:
        for series in metric.timeseries or []:
            dims = {m.name.value.lower(): m.value for m in series.metadatavalues or []}
            found += [(dims, point) for point in series.data or []]
    return found


def read_sample(monitor: Any, endpoint_id: str, deployment: str, start: float, end: float) -> Sample:
    span, only = _timespan(start, end), f"deployment eq '{deployment}'"
    counts = monitor.metrics.list(endpoint_id, timespan=span, interval="FULL", metricnames="RequestsPerMinute",
                                  aggregation="Total", filter=f"{only} and statusCode eq '*'")
    by_status: dict[int, int] = {}
    for dims, point in _points(counts):
        if point.total and dims.get("statuscode", "").isdigit():
            code = int(dims["statuscode"])
            by_status[code] = by_status.get(code, 0) + int(point.total)
    latency = monitor.metrics.list(endpoint_id, timespan=span, interval="FULL", metricnames="RequestLatency_P95",
                                   aggregation="Average", filter=only)
    p95 = next((p.average for _, p in _points(latency) if p.average is not None), None)
    return Sample(deployment, start, end, by_status, p95)
