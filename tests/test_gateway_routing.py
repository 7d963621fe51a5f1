"""The gateway's pure routing rules."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from emulator.gateway_routing import NO_LIVE_DEPLOYMENT, GatewayError, choose_route, engine_path, split_scoring_path
from emulator.scoring_directory import DeploymentView, EndpointView


def endpoint(traffic: dict[str, int], mirror: dict[str, int] | None = None) -> EndpointView:
    deployments = {n: DeploymentView(n, 1, 1000, 1) for n in ("blue", "green")}
    return EndpointView("ep", "Key", traffic, mirror or {}, deployments)


def test_scoring_paths_split_and_map_to_engine_paths():
    assert split_scoring_path("/endpoints/ep/score") == ("ep", "score")
    assert split_scoring_path("/endpoints/ep/v1/chat/completions") == ("ep", "v1/chat/completions")
    assert split_scoring_path("/endpoints/ep") == ("ep", "")
    for bad in ("/", "/score", "/endpoints/", "/other/ep/score"):
        with pytest.raises(GatewayError) as err:
            split_scoring_path(bad)
        assert err.value.status == 404
    assert engine_path("score", "/") == "/v1/chat/completions"
    assert engine_path("score", "/v1/completions") == "/v1/completions"
    assert engine_path("v1/models", "/") == "/v1/models"
    assert engine_path("", "/") == "/"


def test_weighted_draw_follows_traffic_and_mirror_share():
    rng = random.Random(1)
    routes = [choose_route(endpoint({"blue": 70, "green": 30}), None, rng) for _ in range(4000)]
    served = Counter(r.deployment for r in routes)
    assert 0.67 < served["blue"] / 4000 < 0.73
    assert all(r.mirror is None for r in routes)
    mirrored = [choose_route(endpoint({"blue": 100}, {"green": 20}), None, rng) for _ in range(4000)]
    assert {r.deployment for r in mirrored} == {"blue"}
    assert 0.17 < sum(r.mirror == "green" for r in mirrored) / 4000 < 0.23


def test_header_wins_even_at_zero_and_is_never_mirrored():
    ep = endpoint({"blue": 100}, {"green": 50})
    routes = {choose_route(ep, "green", random.Random(seed)) for seed in range(20)}
    assert {(r.deployment, r.mirror) for r in routes} == {("green", None)}
    assert choose_route(ep, "GREEN", random.Random()).deployment == "green"  # names are case-insensitive
    with pytest.raises(GatewayError) as err:
        choose_route(ep, "purple", random.Random())
    assert err.value.status == 404 and "purple" in err.value.message


def test_no_live_traffic_is_azures_404():
    with pytest.raises(GatewayError) as err:
        choose_route(endpoint({"blue": 0, "green": 0}), None, random.Random())
    assert (err.value.status, err.value.message) == (404, NO_LIVE_DEPLOYMENT)
    assert choose_route(endpoint({}), "blue", random.Random()).deployment == "blue"
