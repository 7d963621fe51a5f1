"""Azure Monitor metrics of online endpoints, computed from what the scoring gateway measured.

``GET {endpoint id}/providers/Microsoft.Insights/metrics`` as azure-mgmt-monitor's ``metrics.list`` sends it
(api-version 2024-02-01): ``metricnames``, ``timespan`` (``start/end``), ``interval`` (ISO 8601 duration or
``FULL``), ``aggregation``, ``$filter`` (``dim eq 'v' [or dim eq 'w'] and dim2 eq '*'``). The answer has
Azure's ``Response`` shape; an unknown metric is Azure's flat 400 ``BadRequest`` ("Failed to find metric
configuration ..."). Metrics are Azure ML's endpoint metrics:

    RequestLatency_P50/P90/P95/P99  ms, the percentile of whole-request latency (arrival to last byte) of the
                                    requests answered in each time grain; dimension ``deployment``
    RequestsPerMinute               requests answered (total/count), or per minute (average/minimum/maximum);
                                    dimensions ``deployment``, ``statusCode``, ``statusCodeClass``

A request counts when it finishes, under the deployment it was routed to, with the status the client got
(the gateway's own 429/408/424/503 included); mirror copies do not count. The gateway keeps the last
``MAX_RECORDS`` requests in memory: metrics start empty after an emulator restart.
"""

from __future__ import annotations

import re
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from starlette.responses import JSONResponse, Response

MAX_RECORDS = 200_000
PROVIDER, RESOURCE_TYPE = "Microsoft.MachineLearningServices", "workspaces/onlineEndpoints"
_METRICS_PATH = (r"/subscriptions/(?P<sub>[^/]+)/resourcegroups/(?P<rg>[^/]+)"
                 r"/providers/microsoft\.machinelearningservices/workspaces/(?P<ws>[^/]+)"
                 r"/onlineendpoints/(?P<ep>[^/]+)/providers/microsoft\.insights/metrics")
_DURATION = re.compile(r"^P(?:(?P<d>\d+)D)?(?:T(?:(?P<h>\d+)H)?(?:(?P<m>\d+)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?$",
                       re.IGNORECASE)
_CLAUSE = re.compile(r"^\s*(?P<dim>[A-Za-z_]+)\s+eq\s+'(?P<value>[^']*)'\s*$", re.IGNORECASE)
_AGGREGATIONS = ("average", "minimum", "maximum", "total", "count")


@dataclass(frozen=True)
class Measured:
    """One request the gateway answered."""

    at: float  # epoch seconds when the answer ended
    endpoint: str  # lower case
    deployment: str
    status: int
    latency_ms: float


class RequestLog:
    """The gateway's per-request record, bounded: the oldest go first."""

    def __init__(self, max_records: int = MAX_RECORDS) -> None:
        self._records: deque[Measured] = deque(maxlen=max_records)

    def record(self, endpoint: str, deployment: str, status: int, latency_ms: float) -> None:
        self._records.append(Measured(time.time(), endpoint.lower(), deployment, status, latency_ms))

    def between(self, endpoint: str, start: float, end: float) -> list[Measured]:
        name = endpoint.lower()
        return [r for r in self._records if r.endpoint == name and start <= r.at < end]


class Seen:
    """Wraps an ASGI ``send`` to remember the status sent; the gateway names where the request was routed."""

    def __init__(self, send: Callable[[Any], Any]) -> None:
        self._send, self.started = send, time.monotonic()
        self.status: int | None = None
        self.endpoint = self.deployment = ""

    async def send(self, message: Any) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        await self._send(message)

    def routed(self, endpoint: str, deployment: str) -> None:
        self.endpoint, self.deployment = endpoint, deployment

    def into(self, log: RequestLog | None) -> None:
        """Record the request once answered, if it reached a deployment (a 401 or 404 names none)."""
        if log is not None and self.deployment and self.status is not None:
            log.record(self.endpoint, self.deployment, self.status, (time.monotonic() - self.started) * 1000)


@dataclass(frozen=True)
class Definition:
    name: str
    unit: str
    dimensions: tuple[str, ...]
    default_aggregation: str
    percentile: int | None = None


DEFINITIONS = {d.name.lower(): d for d in [
    *(Definition(f"RequestLatency_P{p}", "MilliSeconds", ("deployment",), "average", p) for p in (50, 90, 95, 99)),
    Definition("RequestsPerMinute", "Count", ("deployment", "statusCode", "statusCodeClass"), "total"),
]}
_DIMENSION = {"deployment": lambda r: r.deployment, "statuscode": lambda r: str(r.status),
              "statuscodeclass": lambda r: f"{r.status // 100}xx"}


class MetricsError(Exception):
    """A bad query, answered as Azure Monitor does: 400 with a flat ``{code, message}``."""


def bad_request(message: str) -> MetricsError:
    return MetricsError(message)


def duration_s(text: str) -> float:
    m = _DURATION.match(text.strip())
    if not m or not any(m.groupdict().values()):
        raise bad_request(f"Invalid duration '{text}': expected an ISO 8601 duration such as PT1M, or FULL.")
    d, h, mi, s = (float(m.group(k) or 0) for k in "dhms")
    seconds = ((d * 24 + h) * 60 + mi) * 60 + s
    if seconds <= 0:
        raise bad_request(f"Invalid duration '{text}': must be positive.")
    return seconds


def iso_duration(seconds: float) -> str:
    whole = int(seconds)
    h, rest = divmod(whole, 3600)
    m, s = divmod(rest, 60)
    frac = seconds - whole
    sec = f"{s + frac:g}S" if s or frac else ""
    return "PT" + (f"{h}H" if h else "") + (f"{m}M" if m else "") + sec if (h or m or sec) else "PT0S"


def _instant(text: str) -> float:
    try:
        parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise bad_request(f"Invalid timespan: '{text}' is not an ISO 8601 date and time.") from None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


def timespan(text: str | None, now: float) -> tuple[float, float]:
    """``start/end`` or ``start/duration``; a lone duration ends now; none is the last hour (Azure's default)."""
    if not text:
        return now - 3600, now
    first, _, second = text.partition("/")
    if not second:
        return now - duration_s(first), now
    start = _instant(first)
    end = start + duration_s(second) if second.upper().startswith("P") else _instant(second)
    if end <= start:
        raise bad_request(f"Invalid timespan '{text}': the end must be after the start.")
    return start, end


def parse_filter(text: str | None) -> dict[str, set[str] | None]:
    """dimension (lower case) -> the values asked for, or None for ``'*'`` (every value, split)."""
    wanted: dict[str, set[str] | None] = {}
    for clause in filter(None, re.split(r"\s+and\s+", text or "", flags=re.IGNORECASE)):
        values: set[str] | None = set()
        dims = set()
        for part in re.split(r"\s+or\s+", clause, flags=re.IGNORECASE):
            m = _CLAUSE.match(part.strip("() "))
            if not m:
                raise bad_request(f"Invalid $filter '{text}': expected dimension eq 'value' clauses.")
            dims.add(m["dim"].lower())
            values = None if m["value"] == "*" or values is None else values | {m["value"]}
        if len(dims) != 1:
            raise bad_request(f"Invalid $filter '{text}': the or operator cannot separate different dimensions.")
        wanted[dims.pop()] = values
    return wanted


def _percentile(values: list[float], p: int) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def _point(definition: Definition, records: list[Measured], grain_s: float, aggregations: Iterable[str],
           at: float) -> dict[str, Any]:
    point: dict[str, Any] = {"timeStamp": datetime.fromtimestamp(at, UTC).isoformat().replace("+00:00", "Z")}
    if definition.percentile is not None:
        value = _percentile([r.latency_ms for r in records], definition.percentile) if records else None
        figures = {"average": value, "minimum": value, "maximum": value, "total": value, "count": len(records)}
    else:
        per_minute = len(records) * 60 / grain_s
        figures = {"average": per_minute, "minimum": per_minute, "maximum": per_minute, "total": float(len(records)),
                   "count": float(len(records))}
    for aggregation in aggregations:
        if figures[aggregation] is not None:
            point[aggregation] = figures[aggregation]
    return point


def metric(resource_id: str, definition: Definition, records: list[Measured], wanted: dict[str, set[str] | None],
           start: float, end: float, grain_s: float, aggregations: list[str]) -> dict[str, Any]:
    """One entry of the response's ``value``: a time series per combination of the filtered dimensions."""
    unknown = sorted(set(wanted) - {d.lower() for d in definition.dimensions})
    if unknown:
        raise bad_request(f"Metric: {definition.name} does not support requested dimension combination: "
                          f"{', '.join(unknown)}, supported ones are: {', '.join(definition.dimensions)}")
    names = {d.lower(): d for d in definition.dimensions}
    series: dict[tuple[str, ...], list[Measured]] = {}
    for r in records:
        key = tuple(_DIMENSION[dim](r) for dim in wanted)
        if all(values is None or value in values for value, values in zip(key, wanted.values())):
            series.setdefault(key, []).append(r)
    if not wanted:
        series.setdefault((), [])
    grains = [start + i * grain_s for i in range(max(1, int((end - start) / grain_s + 0.999999)))]
    timeseries = []
    for key in sorted(series):
        points = [_point(definition, [r for r in series[key] if g <= r.at < min(g + grain_s, end)],
                         grain_s, aggregations, g) for g in grains]
        timeseries.append({"metadatavalues": [{"name": {"value": names[dim], "localizedValue": names[dim]},
                                               "value": value} for dim, value in zip(wanted, key)],
                           "data": points})
    return {"id": f"{resource_id}/providers/Microsoft.Insights/metrics/{definition.name}",
            "type": "Microsoft.Insights/metrics",
            "name": {"value": definition.name, "localizedValue": definition.name.replace("_", " ")},
            "displayDescription": "", "unit": definition.unit, "timeseries": timeseries, "errorCode": "Success"}


def answer(resource_id: str, location: str, log: RequestLog, endpoint: str, query: dict[str, str],
           now: float | None = None) -> dict[str, Any]:
    """The whole ``Response`` for a query (keys of ``query`` in any case), or ``MetricsError``."""
    q = {k.lower(): v for k, v in query.items()}
    names = [n.strip() for n in (q.get("metricnames") or "RequestsPerMinute").split(",") if n.strip()]
    definitions = []
    for name in names:
        if name.lower() not in DEFINITIONS:
            valid = ",".join(d.name for d in DEFINITIONS.values())
            raise bad_request(f"Failed to find metric configuration for provider: {PROVIDER}, resource Type: "
                              f"{RESOURCE_TYPE}, metric: {name}, Valid metrics: {valid}")
        definitions.append(DEFINITIONS[name.lower()])
    start, end = timespan(q.get("timespan"), time.time() if now is None else now)
    interval = q.get("interval") or "PT1M"
    grain_s = end - start if interval.upper() == "FULL" else duration_s(interval)
    asked = [a.strip().lower() for a in (q.get("aggregation") or "").split(",") if a.strip()]
    bad = [a for a in asked if a not in _AGGREGATIONS]
    if bad:
        raise bad_request(f"Invalid aggregation {', '.join(bad)}: expected {', '.join(_AGGREGATIONS)}.")
    wanted = parse_filter(q.get("$filter"))
    records = log.between(endpoint, start, end)
    iso = f"{datetime.fromtimestamp(start, UTC):%Y-%m-%dT%H:%M:%SZ}/{datetime.fromtimestamp(end, UTC):%Y-%m-%dT%H:%M:%SZ}"
    return {"cost": 0, "timespan": iso, "interval": iso_duration(grain_s),
            "value": [metric(resource_id, d, records, wanted, start, end, grain_s, asked or [d.default_aggregation])
                      for d in definitions],
            "namespace": f"{PROVIDER}/{RESOURCE_TYPE}", "resourceregion": location}


def routes(control: Any, query: Callable[[], dict[str, str]]) -> list[tuple[str, str, Callable[..., Any]]]:
    """(method, path pattern, handler) for the control plane's route table; ``query`` gives the request's query."""

    async def list_metrics(body: dict, sub: str, rg: str, ws: str, ep: str) -> Response:
        endpoint = control._endpoint(sub, rg, ws, ep)  # 404 ResourceNotFound as for the endpoint itself
        try:
            return JSONResponse(answer(endpoint["id"], control.location, control.measured, endpoint["name"], query()))
        except MetricsError as err:
            return JSONResponse({"code": "BadRequest", "message": str(err)}, 400)

    return [("GET", _METRICS_PATH, list_metrics)]

