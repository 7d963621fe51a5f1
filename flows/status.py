"""Is the endpoint what the settings say? One read-only report of what serves, and the drift from the settings.

    python -m flows.status [--json]      settings from R1_* variables or .env

Exit 0: the report was made, in sync or not (``drift`` in the JSON says which; a drift finding is also the
Prefect event ``r1.status.drift``, for an automation to act on); 1: the endpoint could not be read;
2: invalid input (settings). Drift is a finding, not a failure: an hourly run that exited 1 on drift would
turn the deployment's run history red while the endpoint serves fine, and hide a status run that really failed.

This module is the runbook; what is read is ``tasks.status.observe``, what differs is ``tasks.status.drift``
(the rollout's own reconciler on the live endpoint, and redeploy's read-only upstream check). Nothing changes.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from tasks import clients
from tasks.azureml.transient import transient
from tasks.cli import EXIT_OK, run_cli
from tasks.events import emit
from tasks.reports import publish_markdown, publish_table, write_json
from tasks.run_report import cli_run, current_run_id, run_folder
from tasks.settings import load_settings
from tasks.status import drift as drift_module
from tasks.status import observe as observe_module
from tasks.status.report import lines, markdown

arm = task(cache_policy=NO_CACHE, retries=3, retry_delay_seconds=[1, 5, 15], retry_condition_fn=transient)
observe = arm(observe_module.observe, name="observe")
drift = arm(drift_module.drift, name="drift")

DRIFT_EVENT = "r1.status.drift"


@flow(name="status", log_prints=False)
def status() -> dict[str, Any]:
    """Read the endpoint, compare it with the settings (a rollout's plan, autoscale, upstream), report."""
    s = load_settings()
    run_id = current_run_id()
    clients.prepare_target(s)
    ml = clients.ml_client(s)
    seen = observe(ml, clients.monitor_client(s), s.resource_group, s.endpoint_name)
    found = drift(ml, clients.registry_client(s), s, seen)
    summary = lines(seen, found)
    record = {"outcome": "drift" if found.findings else "in sync", **seen.record(), **found.record(), "run": run_id,
              "summary": summary}
    log = get_run_logger()
    for line in summary:
        log.warning(line) if line.startswith("DRIFT") else log.info(line)
    if found.findings:
        emit(DRIFT_EVENT, s.endpoint_name, {"findings": found.findings, "plan": found.plan, "run": run_id})
    folder = run_folder(s.reports_dir, "status", run_id)
    write_json(folder / "status.json", record)
    publish_table("status-deployments", [d.row() for d in seen.deployments], description=f"deployments of {seen.name}")
    publish_markdown("status-report", markdown(seen, found), description=f"status of {seen.name}: {record['outcome']}")
    return {**record, "report_dir": str(folder)}


# Command line ---------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.status", description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object on stdout")
    args = parser.parse_args(argv)
    load_settings()  # invalid settings: exit 2 before Prefect starts
    code, outcome = cli_run(lambda: status(return_state=True))  # an untrackable R1_UPSTREAM_BASE: exit 2
    if code != EXIT_OK:
        print(json.dumps(outcome) if args.json else f"status {outcome['outcome']}: {outcome['reason']}")
        return code
    print(json.dumps(outcome) if args.json else "\n".join(outcome["summary"] + [f"report: {outcome['report_dir']}"]))
    return EXIT_OK

if __name__ == "__main__":
    run_cli(main)
