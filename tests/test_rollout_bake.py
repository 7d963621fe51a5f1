"""Bakes judged without a Prefect run: whether settings can ever be judged, when to keep baking, what fails."""

from __future__ import annotations

import json

from tasks.loadtest.slo import Verdict
from tasks.rollout.bake import BAKE_EXTENSION, bake_spec, failures, keep_baking, unjudgeable_bake
from tasks.rollout.outcome import cli_outcome, recorded_failure
from tasks.rollout.steps import Refused, RolledBack
from tasks.settings import load_settings

PASS, THIN, FAIL = (Verdict("pass", [], 30), Verdict("inconclusive", ["only 2 requests"], 2),
                    Verdict("fail", ["TTFT p95 high"], 30))


def test_a_bake_that_can_never_be_judged_is_named_with_its_numbers():
    s = load_settings(bake_seconds=2)  # default: 4 req/s, smallest step 10 %, 20 requests needed
    problem = unjudgeable_bake(s)
    assert problem is not None
    for words in ("R1_BAKE_SECONDS=2", "R1_LOAD_GATE__BAKE_RATE=4", "about 2.4 requests", "(10 %",
                  "R1_SLO__MIN_REQUESTS=20"):
        assert words in problem, (words, problem)


def test_judgeable_bakes_pass_the_check():
    assert unjudgeable_bake(load_settings()) is None  # 4 x 60 x 3 x 10 % = 72 >= 20
    assert unjudgeable_bake(load_settings(bake_seconds=0)) is None  # no bake configured: nothing to judge
    # the extension counts: 4 x 6 x 10 % = 2.4 alone, x 3 = 7.2 >= 7
    assert unjudgeable_bake(load_settings(bake_seconds=6, slo={"min_requests": 7})) is None
    assert unjudgeable_bake(load_settings(bake_seconds=6, slo={"min_requests": 8})) is not None


def test_the_live_load_outlasts_every_bake_it_may_need():
    s = load_settings(bake_seconds=10, traffic_steps=[25, 100])
    assert bake_spec(s).duration_s >= 3 * 10 * BAKE_EXTENSION and bake_spec(s).rate == s.load_gate.bake_rate


def test_a_thin_bake_is_extended_but_not_forever():
    assert keep_baking({"blue": PASS, "green": THIN}, "green", baked_s=10, bake_s=10)
    assert keep_baking({"blue": PASS}, "green", baked_s=10, bake_s=10)
    assert not keep_baking({"blue": PASS, "green": THIN}, "green", baked_s=30, bake_s=10)
    assert not keep_baking({"green": PASS}, "green", baked_s=10, bake_s=10)


def test_a_bake_fails_on_any_failing_colour_or_a_new_colour_it_cannot_judge():
    assert failures({"blue": PASS, "green": PASS}, "green", 10) == []
    assert failures({"blue": FAIL, "green": PASS}, "green", 10) == ["blue: fail on 30 requests: TTFT p95 high"]
    assert "not enough live requests to judge in 30.0 s" in failures({"green": THIN}, "green", 30)[0]


def test_outcomes_map_to_exit_codes(tmp_path):
    assert cli_outcome({"outcome": "promoted"}) == (0, {"outcome": "promoted"})
    assert cli_outcome(RolledBack("smoke failed"))[0] == 1
    code, outcome = cli_outcome(Refused("policy gate"))
    assert code == 2 and outcome["outcome"] == "refused" and outcome["reason"] == "policy gate"
    assert cli_outcome(KeyError("x")) == (1, {"outcome": "failed", "reason": "KeyError: 'x'", "report_dir": None})


def test_the_recorded_outcome_stands_in_when_prefect_lost_it(tmp_path):
    folder = tmp_path / "rollout-20260101T000000Z-abcd1234"
    folder.mkdir()
    (folder / "rollout.json").write_text(json.dumps({"outcome": "rolled back", "reason": "not approved in time"}))
    err = recorded_failure(tmp_path, "abcd1234")
    assert isinstance(err, RolledBack) and str(err) == "not approved in time" and err.report_dir == str(folder)
    assert recorded_failure(tmp_path, "ffff0000") is None
