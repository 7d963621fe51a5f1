"""The blue/green rollout: from "image built" to "serving 100 %", or back to the old colour with the reason.

    python -m flows.rollout [--json]        settings from R1_* variables or .env

Exit 0: promoted (or nothing to do); 1: rolled back; 2: invalid input, or refused before any change.

This module is the runbook: the order of the steps, the rollback ``try`` and the approval pause. What
each step does and decides lives in ``tasks.rollout.steps`` (and the pure ``reconcile``, ``bake``, ``lock``).
Each step reads the live endpoint first, so a re-run after success is a no-op and a re-run after a crash
or kill converges. Rollback is an explicit, idempotent step driven by live state, never a task-retry side effect.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from functools import partial
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput

from tasks import clients
from tasks.azureml.endpoint import read_live_state
from tasks.azureml.transient import transient
from tasks.cli import run_cli
from tasks.image.build import ImageBuildFailed
from tasks.loadtest.client import BackgroundLoad, Destination
from tasks.loadtest.record import RequestRecord
from tasks.prefect_home import print_run_url
from tasks.rollout import steps
from tasks.rollout.bake import bake_spec
from tasks.rollout.lock import RolloutLocked, me
from tasks.rollout.outcome import cli_outcome, recorded_failure, reported
from tasks.rollout.progress import rollout_phases
from tasks.rollout.reconcile import RolloutPlan, remaining_steps, settled
from tasks.rollout.report import Timeline, plot, publish
from tasks.rollout.steps import Refused, RolledBack, StepResult
from tasks.run_report import current_run_id, run_folder
from tasks.settings import Settings, load_settings


arm = task(cache_policy=NO_CACHE, retries=3, retry_delay_seconds=[1, 5, 15], retry_condition_fn=transient)
gate = task(cache_policy=NO_CACHE)

preflight = arm(steps.preflight, name="preflight")
image_step = gate(steps.image, name="image")  # azure-core retries each ACR call; a build is not re-run blindly
endpoint = arm(steps.endpoint, name="endpoint")
take_lock, release_lock = arm(steps.take_lock, name="lock"), arm(steps.release_lock, name="unlock")
model, plan = arm(steps.model, name="model"), arm(steps.plan, name="plan")
stage = arm(steps.stage, name="stage", task_run_name="stage {plan.new}")
ready = gate(steps.ready, name="ready", task_run_name="ready {plan.new}")
smoke = gate(steps.smoke, name="smoke", task_run_name="smoke {plan.new}")
load_gate = gate(steps.load_gate, name="load-gate", task_run_name="load gate {plan.new}")
mirror = gate(steps.mirror, name="mirror", task_run_name="mirror {plan.new}")
shift = gate(steps.shift, name="shift", task_run_name="shift {percent} %")
autoscale, retire = arm(steps.autoscale, name="autoscale"), arm(steps.retire, name="retire")
rollback, remember = arm(steps.rollback, name="rollback"), arm(steps.remember_outcome, name="record outcome")


class Approval(RunInput):
    approve: bool
    reason: str = ""


def record(timeline: Timeline, result: StepResult | None) -> None:
    """Log and keep what a step decided; a failed gate becomes the rollback's reason."""
    if result is None:
        return
    timeline.record(result)  # logged too: the run's log tab reads as the runbook
    if result.failure:
        raise RolledBack(result.failure)


def approve_promotion(s: Settings, timeline: Timeline) -> None:
    """Pause before 100 % until a person approves in the UI (R1_REQUIRE_APPROVAL); silence is a no."""
    timeline.add("approval", "info", f"waiting up to {s.approval_timeout_seconds} s for approval")
    try:
        decision = pause_flow_run(wait_for_input=Approval.with_initial_data(approve=False),
                                  timeout=s.approval_timeout_seconds, key="promote-100")
    except Exception as err:  # FlowPauseTimeout and friends
        raise RolledBack(f"promotion not approved in time ({type(err).__name__})") from None
    if not decision.approve:
        raise RolledBack(f"promotion rejected: {decision.reason or 'no reason given'}")
    timeline.add("approval", "ok", f"approved: {decision.reason}")


@flow(name="rollout", log_prints=False)
def rollout(image: str | None = None, traffic_steps: list[int] | None = None, bake_seconds: float | None = None,
            mirror_percent: int | None = None, require_approval: bool | None = None,
            model_asset: str | None = None, keep_old_warm: bool | None = None) -> dict[str, Any]:
    """Blue/green rollout of the settings' model and image. Parameters override the matching R1_* settings."""
    given = dict(image=image, traffic_steps=traffic_steps, bake_seconds=bake_seconds, mirror_percent=mirror_percent,
                 require_approval=require_approval, model_asset=model_asset, keep_old_warm=keep_old_warm)
    s = load_settings(**{k: v for k, v in given.items() if v is not None})
    run_id = current_run_id()
    timeline = Timeline(run_id, run_folder(s.reports_dir, "rollout", run_id))
    clients.prepare_target(s)
    ml, mine = clients.ml_client(s), me(run_id)
    try:
        record(timeline, preflight(ml, clients.authorization_client(s), s))
        pinned, result = image_step(ml, clients.registry_client(s), partial(clients.blob_client, s), s)
        record(timeline, result)
        dest, result = endpoint(ml, s, clients.data_plane_ca(s))
        record(timeline, result)
        take_lock(ml, s.endpoint_name, mine)
    except (Refused, RolloutLocked) as err:
        publish(timeline, "refused", str(err))
        raise reported(Refused(str(err)), timeline) from None
    except ImageBuildFailed as err:  # nothing changed yet: the build's own failure, with its log's last lines
        timeline.record(StepResult("image", "failed", str(err), evidence={"image_build_log": err.log_tail}))
        publish(timeline, "failed", str(err))
        raise reported(err, timeline) from None
    try:
        record(timeline, model(ml, s))
        decided, result = plan(ml, s, pinned)
        record(timeline, result)
        if nothing_to_do := settled(decided, s.keep_old_warm):
            return _outcome(ml, s, timeline, decided, "no-op", nothing_to_do)
        records: list[RequestRecord] = []
        shares: list[tuple[float, int]] = []
        if decided.action == "rollout":
            try:
                _promote(ml, s, timeline, decided, pinned, dest, records, shares)
            except Exception as err:  # any failure after the plan: the old colour must serve again
                reason = str(err) if isinstance(err, RolledBack) else f"{type(err).__name__}: {err}"
                get_run_logger().error("rolling back: %s", reason)
                record(timeline, rollback(ml, s, decided, reason))
                _outcome(ml, s, timeline, decided, "rolled back", reason, records, shares)
                raise reported(RolledBack(reason), timeline) from None
        record(timeline, autoscale(ml, clients.monitor_client(s), s, decided))
        record(timeline, retire(ml, s, decided))
        return _outcome(ml, s, timeline, decided, "promoted", f"{decided.new} serves 100 %", records, shares)
    finally:
        release_lock(ml, s.endpoint_name, mine)


def _promote(ml: Any, s: Settings, timeline: Timeline, decided: RolloutPlan, pinned: str, dest: Destination,
             records: list[RequestRecord], shares: list[tuple[float, int]]) -> None:
    """Stage, gate, then shift live traffic in steps while a background load bakes each one."""
    timeline.progress.expect(rollout_phases(s, decided))
    record(timeline, stage(ml, s, decided, pinned))
    record(timeline, ready(ml, s, decided, timeline.waiting))
    record(timeline, smoke(s, dest, decided))
    record(timeline, load_gate(s, dest, decided))
    with BackgroundLoad(dest, bake_spec(s)) as live:
        try:
            if s.mirror_percent and decided.old:
                record(timeline, mirror(ml, s, decided, live, timeline.waiting))
            for percent in remaining_steps(s.traffic_steps, decided):
                if percent == 100 and s.require_approval:
                    approve_promotion(s, timeline)
                result, moved = shift(ml, s, decided, percent, live, timeline.record, timeline.waiting)
                shares.append(moved)
                record(timeline, result)
        finally:
            records.extend(live.records())


def _outcome(ml: Any, s: Settings, timeline: Timeline, decided: RolloutPlan, outcome: str, reason: str,
             records: list[RequestRecord] = (), shares: list[tuple[float, int]] = ()) -> dict[str, Any]:
    publish(timeline, outcome, reason, plot(list(records), list(shares), decided.new, timeline.folder / "rollout.png"))
    if outcome != "no-op":
        remember(ml, s, decided, outcome, reason, timeline.run_id)
    traffic = read_live_state(ml, s.endpoint_name).traffic
    return {"outcome": outcome, "reason": reason, "new": decided.new, "old": decided.old, "traffic": traffic,
            "report_dir": str(timeline.folder)}


# Command line ---------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.rollout", description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the outcome as one JSON object on stdout")
    args = parser.parse_args(argv)
    settings = load_settings()  # invalid settings: exit 2 before Prefect starts
    with contextlib.redirect_stdout(sys.stderr):
        state = rollout(return_state=True)
    print_run_url(state.state_details.flow_run_id)
    result = state.result(raise_on_failure=False)
    if isinstance(result, Exception) and not isinstance(result, (Refused, RolledBack)):
        result = recorded_failure(settings.reports_dir, str(state.state_details.flow_run_id)[:8]) or result
    code, outcome = cli_outcome(result)
    print(json.dumps(outcome) if args.json else f"rollout {outcome['outcome']}: {outcome['reason']}"
          + (f"\nreport: {outcome['report_dir']}" if outcome.get("report_dir") else ""))
    return code


if __name__ == "__main__":
    run_cli(main)
