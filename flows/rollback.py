"""Put the previous colour back now: a warm colour in one traffic update, a retired one staged again with the gates.

    python -m flows.rollback --reason TEXT [--delete-rolled-away] [--json]    settings from R1_* variables or .env

Exit 0: the previous colour serves 100 % (or already did); 1: staging the previous spec again failed its gates
(the colour rolled away from still serves); 2: refused, nothing changed (no reason given, a rollout holds the
endpoint, no endpoint, nothing serving, nothing recorded to roll back to).

This module is the runbook; the decision is ``tasks.rollback.plan.plan_rollback`` on the live endpoint and the
``r1-previous`` record the last promotion left on it. The rollback holds the rollout lock while it changes
traffic; a retired colour is staged by the rollout flow itself (as a subflow, which takes the lock).
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from azure.core.exceptions import ResourceNotFoundError
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.rollout import rollout
from tasks import clients
from tasks.azureml.transient import transient
from tasks.cli import InputError, run_cli
from tasks.events import emit
from tasks.rollback import steps
from tasks.rollback.plan import RollbackFailed, RollbackPlan, hash_note
from tasks.rollout import steps as rollout_steps
from tasks.rollout.lock import RolloutLocked, me
from tasks.rollout.steps import Refused, RolledBack
from tasks.run_report import cli_run, current_run_id, publish_run, reported, run_folder
from tasks.settings import load_settings

arm = task(cache_policy=NO_CACHE, retries=3, retry_delay_seconds=[1, 5, 15], retry_condition_fn=transient)

take_lock, release_lock = arm(rollout_steps.take_lock, name="lock"), arm(rollout_steps.release_lock, name="unlock")
decide = arm(steps.decide, name="decide")
put_back = arm(steps.put_back, name="traffic", task_run_name="{plan.target} to 100 %")
follow_autoscale = arm(steps.follow_autoscale, name="autoscale")
settle = arm(steps.settle_rolled_away, name="rolled away", task_run_name="settle {colour}")
keep_record = arm(steps.keep_record, name="record")

NO_REASON = "a reason is required (--reason TEXT, the reason field in the UI): it is kept in the report"


@flow(name="rollback", log_prints=False)
def rollback(reason: str = "", delete_rolled_away: bool = False) -> dict[str, Any]:
    """Put the previous colour back at 100 %; the colour rolled away from stays at 0 % unless delete_rolled_away."""
    started = time.monotonic()
    if not reason.strip():
        raise InputError(NO_REASON)
    s = load_settings()
    run_id = current_run_id()
    folder = run_folder(s.reports_dir, "rollback", run_id)
    record: dict[str, Any] = {"outcome": "", "reason": reason, "endpoint": s.endpoint_name, "run": run_id}
    clients.prepare_target(s)
    ml, mine, name = clients.ml_client(s), me(run_id), s.endpoint_name
    try:
        try:
            take_lock(ml, name, mine)
        except ResourceNotFoundError:
            raise Refused(f"endpoint {name} does not exist") from None
        try:
            decided = decide(ml, name)
            record.update(case=decided.action, plan=decided.reason, traffic_before=decided.before)
            get_run_logger().info("%s: %s", decided.action, decided.reason)
            if decided.action == "warm":
                record.update(traffic_after=put_back(ml, name, decided), seconds_to_100=time.monotonic() - started)
                record["autoscale"] = follow_autoscale(ml, clients.monitor_client(s), s, decided)
        finally:
            release_lock(ml, name, mine)
        if decided.action == "restage":
            record.update(_restage(ml, name, decided, delete_rolled_away), seconds_to_100=time.monotonic() - started)
        if decided.action != "noop":
            record["rolled_away"] = settle(ml, name, decided.serving, delete_rolled_away)
            emit("r1.rollback.completed", name, {"from": decided.serving, "to": decided.target,
                                                 "case": decided.action, "run": run_id})
    except (Refused, RolloutLocked) as err:
        refused = {**record, "outcome": "refused", "detail": str(err)}
        raise reported(Refused(str(err)), "rollback", folder, refused) from None
    except Exception as err:
        failed = {**record, "outcome": "failed", "detail": f"{type(err).__name__}: {err}"}
        raise reported(err, "rollback", folder, failed)
    record.update(outcome="nothing to do" if decided.action == "noop" else "rolled back", serving=decided.target)
    return {**record, "report_dir": publish_run("rollback", folder, record)}


def _restage(ml: Any, name: str, decided: RollbackPlan, delete: bool) -> dict[str, Any]:
    """The recorded image and model through the rollout's gates, as a subflow; the record then names them again."""
    was = decided.previous
    note = hash_note(was.spec_hash, steps.staged_hash(was))
    log = get_run_logger()
    (log.warning if note.startswith("SETTINGS") else log.info)(note)
    try:
        staged = rollout(**steps.restage_parameters(was), keep_old_warm=not delete)  # rolled away from: kept unless asked
    except RolledBack as err:
        raise RollbackFailed(f"the previous spec failed the rollout's gates: {err}; {decided.serving} still serves "
                             f"(rollout report {err.report_dir})") from None
    keep_record(ml, name, was)
    return {"spec": note, "traffic_after": staged["traffic"], "rollout_report": staged["report_dir"]}


# Command line ---------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.rollback", description=__doc__.splitlines()[0])
    parser.add_argument("--reason", default="", help="why (required; kept in the report)")
    parser.add_argument("--delete-rolled-away", action="store_true",
                        help="delete the colour rolled away from (default: kept at 0 %% for forensics)")
    parser.add_argument("--json", action="store_true", help="print the outcome as one JSON object on stdout")
    args = parser.parse_args(argv)
    if not args.reason.strip():
        raise InputError(NO_REASON)
    load_settings()  # invalid settings: exit 2 before Prefect starts
    code, outcome = cli_run(lambda: rollback(reason=args.reason, delete_rolled_away=args.delete_rolled_away,
                                             return_state=True))
    timing = f" in {outcome['seconds_to_100']:.2f} s" if outcome.get("seconds_to_100") is not None else ""
    print(json.dumps(outcome) if args.json else f"rollback {outcome['outcome']}{timing}: "
          f"{outcome.get('plan') or outcome['reason']}" + (f"\nreport: {outcome['report_dir']}"
                                                           if outcome.get("report_dir") else ""))
    return code


if __name__ == "__main__":
    run_cli(main)
