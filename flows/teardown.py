"""Remove the endpoint, on purpose: traffic to 0, deployments, autoscale settings, then the endpoint.

    python -m flows.teardown --confirm NAME [--json]     NAME: the endpoint's name (R1_ENDPOINT_NAME)

Exit 0: torn down, or nothing to tear down; 1: a step failed (re-run to finish); 2: refused, nothing changed
(``confirm`` is not the endpoint's name, or a rollout holds the endpoint).

This module is the runbook; the steps are ``tasks.teardown``. Each reads the live state first, so a re-run after
a kill finishes the job (the killed run's lock is stale: its process is gone). Model and environment assets stay.
"""

from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path
from typing import Any

from azure.core.exceptions import ResourceNotFoundError
from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from tasks import clients, teardown as steps
from tasks.azureml.endpoint import get_endpoint
from tasks.azureml.transient import transient
from tasks.cli import InputError, run_cli
from tasks.rollout import steps as rollout_steps
from tasks.rollout.lock import RolloutLocked, me
from tasks.rollout.steps import Refused
from tasks.run_report import cli_run, current_run_id, publish_run, reported, run_folder
from tasks.settings import load_settings

arm = task(cache_policy=NO_CACHE, retries=3, retry_delay_seconds=[1, 5, 15], retry_condition_fn=transient)

take_lock, release_lock = arm(rollout_steps.take_lock, name="lock"), arm(rollout_steps.release_lock, name="unlock")
zero_traffic = arm(steps.zero_traffic, name="traffic to 0")
delete_deployments = arm(steps.delete_deployments, name="delete deployments")
delete_autoscale = arm(steps.delete_autoscale, name="delete autoscale")
delete_endpoint = arm(steps.delete_endpoint, name="delete endpoint")


@flow(name="teardown", log_prints=False)
def teardown(confirm: str = "") -> dict[str, Any]:
    """Delete the endpoint the settings name, with its deployments and autoscale; ``confirm`` must be its name."""
    s = load_settings()
    name = s.endpoint_name
    if problem := steps.confirmation_problem(confirm, name):
        raise InputError(problem)  # before any cloud call
    run_id = current_run_id()
    folder = run_folder(s.reports_dir, "teardown", run_id)
    record: dict[str, Any] = {"outcome": "", "endpoint": name, "run": run_id, "kept": steps.KEPT}
    clients.prepare_target(s)
    ml, mine = clients.ml_client(s), me(run_id)
    ep = get_endpoint(ml, name)
    if ep is None:
        return _report(folder, {**record, "outcome": "nothing to tear down", "detail": f"endpoint {name} is absent"})
    try:
        take_lock(ml, name, mine)
    except RolloutLocked as err:
        refused = {**record, "outcome": "refused", "detail": str(err)}
        raise reported(Refused(str(err)), "teardown", folder, refused) from None
    try:
        record["traffic"] = zero_traffic(ml, name)
        record["deployments"] = delete_deployments(ml, name)
        record["autoscale"] = delete_autoscale(clients.monitor_client(s), s.resource_group, name, ep.id)
        record["endpoint_deleted"] = delete_endpoint(ml, name)
    except Exception as err:  # the next run finishes from the live state; leave the endpoint to it, unlocked
        with contextlib.suppress(ResourceNotFoundError):
            release_lock(ml, name, mine)
        failed = {**record, "outcome": "failed", "detail": f"{type(err).__name__}: {err}"}
        raise reported(err, "teardown", folder, failed)
    return _report(folder, {**record, "outcome": "torn down", "detail": f"endpoint {name} deleted"})


def _report(folder: Path, record: dict[str, Any]) -> dict[str, Any]:
    return {**record, "report_dir": publish_run("teardown", folder, record)}


# Command line ---------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.teardown", description=__doc__.splitlines()[0])
    parser.add_argument("--confirm", default="", help="the endpoint's name, to say you mean it")
    parser.add_argument("--json", action="store_true", help="print the outcome as one JSON object on stdout")
    args = parser.parse_args(argv)
    settings = load_settings()  # invalid settings: exit 2 before Prefect starts
    if problem := steps.confirmation_problem(args.confirm, settings.endpoint_name):
        raise InputError(problem)
    code, outcome = cli_run(lambda: teardown(confirm=args.confirm, return_state=True))
    print(json.dumps(outcome) if args.json else f"teardown {outcome['outcome']}: {outcome.get('detail', '')}"
          + (f"\n{outcome['kept']}" if outcome.get("kept") else "")
          + (f"\nreport: {outcome['report_dir']}" if outcome.get("report_dir") else ""))
    return code


if __name__ == "__main__":
    run_cli(main)
