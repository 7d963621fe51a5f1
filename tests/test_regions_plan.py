"""The multi-region plan's checks, waves and per-region settings; outcomes and the stop rule. No cloud, no server."""

from __future__ import annotations

import json

import pytest

from tasks.regions import plan
from tasks.regions.outcome import RegionRun, halted, outcome_of, short, slo_summary
from tasks.rollout.tags import LastRollout
from tasks.settings import load_settings

THREE = [{"region": "swedencentral", "workspace": "ws-se"}, {"region": "francecentral", "workspace": "ws-fr"},
         {"region": "germanywestcentral", "workspace": "ws-de", "instance_count": 2, "autoscale_maximum": 4}]
WAVES = [["swedencentral"], ["francecentral", "germanywestcentral"]]


def settings(regions=THREE, waves=WAVES, **extra):
    return load_settings(regions=json.dumps(regions), waves=json.dumps(waves), **extra)


def test_a_sound_plan_has_no_problems_and_its_waves_in_order():
    s = settings()
    assert plan.problems(s) == []
    assert [[t.region for t in w] for w in plan.waves(s)] == WAVES


def test_without_a_wave_plan_the_first_target_is_the_canary():
    s = settings(waves=[])
    assert [[t.region for t in w] for w in plan.waves(s)] == [["swedencentral"], ["francecentral", "germanywestcentral"]]


@pytest.mark.parametrize(("regions", "waves", "expected"), [
    (THREE + [{"region": "SwedenCentral", "workspace": "ws-se2"}], WAVES, "listed 2 times"),
    ([{"region": "swedencentrall", "workspace": "ws"}], [["swedencentrall"]], "is not an Azure region"),
    ([{"region": "eastus2", "workspace": "ws-us"}], [["eastus2"]], "is not in R1_ALLOWED_REGIONS"),
    (THREE, WAVES + [["northeurope"]], "'northeurope' has no target"),
    (THREE, [["swedencentral"], ["francecentral", "swedencentral"], ["germanywestcentral"]], "is in 2 waves"),
    (THREE, [["swedencentral"], ["francecentral"]], "'germanywestcentral' is in R1_REGIONS but in no wave"),
    (THREE, [["swedencentral"], [], ["francecentral", "germanywestcentral"]], "a wave is empty"),
    ([{"region": "swedencentral", "workspace": "ws se!"}], [], "is not a workspace name"),
    ([{"region": "swedencentral", "workspace": "ws", "endpoint_name": "r1--x"}], [], "endpoint_name"),
    ([], [], "no regional targets"),
])
def test_each_problem_is_one_line_naming_the_variable(regions, waves, expected):
    found = plan.problems(settings(regions, waves))
    assert any(expected in line for line in found), found
    assert all(line.startswith(("R1_REGIONS:", "R1_WAVES:")) and "\n" not in line for line in found)


def test_every_problem_is_reported_at_once():
    bad = [{"region": "eastus2", "workspace": "ws-a"}, {"region": "eastus2", "workspace": "ws-b"}]
    found = plan.problems(settings(bad, [["eastus2"], ["nowhere"]]))
    assert len(found) == 3, found  # duplicate, not allowed, wave names a region without a target


def test_a_region_runs_with_its_own_workspace_and_overrides_and_the_shared_rest():
    s = settings(endpoint_name="r1-eu", instance_count=1)
    de = s.regions[2]
    fields = plan.overrides(s, de)
    assert plan.as_env(fields) == {
        "R1_REGION": "germanywestcentral", "R1_WORKSPACE": "ws-de", "R1_SUBSCRIPTION_ID": s.subscription_id,
        "R1_RESOURCE_GROUP": s.resource_group, "R1_ENDPOINT_NAME": "r1-eu", "R1_INSTANCE_COUNT": "2",
        "R1_AUTOSCALE__MAXIMUM": "4"}
    rs = plan.regional_settings(s, fields)
    assert (rs.region, rs.workspace, rs.instance_count, rs.autoscale.maximum) == ("germanywestcentral", "ws-de", 2, 4)
    assert rs.autoscale.minimum == s.autoscale.minimum and rs.model_asset == s.model_asset and rs.regions == []


def test_an_override_that_breaks_a_rule_is_caught_for_that_region():
    s = settings([{"region": "swedencentral", "workspace": "ws", "autoscale_minimum": 5, "autoscale_maximum": 2}],
                 [["swedencentral"]])
    with pytest.raises(ValueError, match="maximum"):
        plan.regional_settings(s, plan.overrides(s, s.regions[0]))


def test_outcomes_come_from_the_endpoints_record_of_that_run():
    mine = LastRollout("rolled back", "at 25 %: green TTFT p95 over", "abcd1234", "green", "blue", "now")
    assert outcome_of(False, "Flow run failed", mine, "abcd1234") == ("rolled back", "at 25 %: green TTFT p95 over")
    assert outcome_of(True, "", mine, "ffff0000") == ("no-op", "already serves this spec")  # an older run's record
    assert outcome_of(False, "Refused: region eastus2 ...", None, "x")[0] == "refused"
    assert outcome_of(False, "", None, "x")[0] == "failed"


def test_the_fleet_stops_at_a_region_that_did_not_promote():
    ok = RegionRun("swedencentral", 0, "r1", outcome="promoted", reason="green serves 100 %")
    same = RegionRun("francecentral", 1, "r1", outcome="no-op", reason="already")
    bad = RegionRun("germanywestcentral", 1, "r1", outcome="failed", reason="quota")
    assert halted([ok, same]) is None
    assert halted([ok, bad]) == "germanywestcentral failed: quota"


def test_rows_read_well():
    run = RegionRun("swedencentral", 0, "r1", "promoted", "ok", before=None,
                    after="acr.azurecr.io/r1-vllm@sha256:" + "ab" * 32, started=10.0, ended=42.5)
    assert run.row()["image"] == "none → sha256:abababababab"
    assert run.row()["wave"] == 1 and run.duration_s == 32.5
    assert short("plain:tag") == "plain:tag"


def test_slo_summary_counts_every_check_of_gates_and_bakes():
    record = {"events": [
        {"verdict": {"status": "pass", "checks": [{"ok": True}, {"ok": True}]}},
        {"verdict": {"green": {"status": "pass", "checks": [{"ok": True}]},
                     "blue": {"status": "inconclusive", "checks": [], "samples": 3, "reasons": ["few"]}}},
        {"verdict": None}]}
    assert slo_summary(record) == "3/4 SLO checks passed"
    assert slo_summary({"events": []}) == ""


def test_a_regional_run_gets_this_runs_settings_but_no_secret_and_its_own_region():
    env = {"R1_BAKE_SECONDS": "2", "R1_HF_TOKEN": "hf_x", "R1_REGIONS": "[...]", "R1_WAVES": "[]", "PATH": "/bin",
           "R1_REGION": "swedencentral"}
    got = plan.child_env(env, {"region": "francecentral", "workspace": "ws-fr"})
    assert got == {"R1_BAKE_SECONDS": "2", "R1_REGION": "francecentral", "R1_WORKSPACE": "ws-fr"}
