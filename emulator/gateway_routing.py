"""Pure routing decisions of the scoring gateway: which deployment serves, which one is mirrored,
and which engine path a scoring URL reaches. No I/O, so the rules are easy to test and to read."""

from __future__ import annotations

import random
from dataclasses import dataclass

from emulator.scoring_directory import EndpointView

SCORE = "score"
# vLLM serves nothing at "/", so a root scoring route sends ``…/score`` to the OpenAI chat route
# (what the seed guide's snippet posts to the scoring URI).
ROOT_SCORE_TARGET = "/v1/chat/completions"
NO_LIVE_DEPLOYMENT = (
    "No valid deployments to route to. Please check that the endpoint has at least one deployment "
    "with positive weight values or use a deployment specific header to route."
)


class GatewayError(Exception):
    """An answer the gateway gives itself, before any engine is involved (or instead of one)."""

    def __init__(self, status: int, message: str, headers: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers


@dataclass(frozen=True)
class Route:
    deployment: str
    mirror: str | None  # also send a copy here and drop its answer


def split_scoring_path(path: str) -> tuple[str, str]:
    """``/endpoints/{name}/{rest}`` -> (name, rest); anything else is not a scoring URL."""
    parts = path.split("/", 3)
    if len(parts) < 3 or parts[0] or parts[1] != "endpoints" or not parts[2]:
        raise GatewayError(404, "Not found: scoring URLs look like /endpoints/{endpoint}/score")
    return parts[2], parts[3] if len(parts) == 4 else ""


def engine_path(rest: str, scoring_path: str) -> str:
    """The engine path for ``{scoring base}/endpoints/{name}/{rest}``.

    ``score`` reaches the deployment's scoring route (``/v1/chat/completions`` when that route is
    ``/``); any other path is forwarded as it is (``…/v1/completions`` -> ``/v1/completions``).
    """
    if rest == SCORE:
        return ROOT_SCORE_TARGET if scoring_path in ("", "/") else scoring_path
    return "/" + rest


def choose_route(endpoint: EndpointView, header: str | None, rng: random.Random) -> Route:
    """Azure's rules: the ``azureml-model-deployment`` header wins (even at 0 %) and is never
    mirrored; otherwise a weighted draw over live traffic, plus the mirror share."""
    if header is not None:
        # Azure resource names are case-insensitive.
        named = next((name for name in endpoint.deployments if name.lower() == header.lower()), None)
        if named is None:
            raise GatewayError(
                404, f"Deployment '{header}' not found for endpoint '{endpoint.name}' "
                "(from the azureml-model-deployment header)."
            )
        return Route(named, None)
    live = [(name, weight) for name, weight in endpoint.traffic.items()
            if weight > 0 and name in endpoint.deployments]
    total = sum(weight for _, weight in live)
    if not total:
        raise GatewayError(404, NO_LIVE_DEPLOYMENT)
    draw = rng.random() * total
    chosen = live[-1][0]
    for name, weight in live:
        draw -= weight
        if draw < 0:
            chosen = name
            break
    mirror = None
    for name, share in endpoint.mirror_traffic.items():
        if share > 0 and name != chosen and name in endpoint.deployments and rng.random() * 100 < share:
            mirror = name
    return Route(chosen, mirror)
