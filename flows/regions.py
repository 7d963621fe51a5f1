"""Many regions in one run: the canary region first, then the rest in waves, each region its own rollout run.

    python -m flows.regions [--json] [--image REF] [--model-asset NAME:VERSION]     settings from R1_* / .env

Exit 0: every region promoted (or already serving); 1: a region rolled back or failed, later waves untouched;
2: invalid plan, or a workspace that lives in another region than configured: refused before any change.

The runbook: check the plan and every workspace's live region, then per wave run the ``rollout`` deployment once
per region (``run_deployment``: a worker anywhere in the pool takes it; each region builds in and pulls from its
own registry, so its data stays in its region), wait for the wave, stop at the first region that did not promote,
bake, next wave. A region already serving the spec is a no-op, so a re-run after a stop or a kill converges.
Decisions live in ``tasks.regions``; outcomes are read from the endpoints themselves (``r1-last-rollout``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import flow, get_client, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import WorkerStatus
from prefect.exceptions import ObjectNotFound
from prefect.deployments import run_deployment
from prefect.settings import get_current_settings

from tasks import clients
from tasks.azureml.endpoint import get_endpoint
from tasks.cli import EXIT_FAILED, EXIT_OK, run_cli
from tasks.prefect_home import WORK_POOL, flow_run_url, print_run_url
from tasks.regions import plan
from tasks.regions.outcome import RegionRun, halted, outcome_of, slo_summary
from tasks.regions.report import publish
from tasks.regions.serving import live_region, serving_image, wait_unlocked
from tasks.rollout.report import recorded_outcome
from tasks.rollout.tags import last_rollout
from tasks.settings import RegionTarget, Settings, SettingsError, load_settings

ROLLOUT_DEPLOYMENT = "rollout/rollout"


class PlanRefused(SettingsError):
    """The plan or a workspace's live region is wrong: exit 2, nothing changed."""


class FleetStopped(Exception):
    """A region did not promote: later waves were not touched (exit 1)."""

    def __init__(self, reason: str, report_dir: str):
        super().__init__(reason)
        self.report_dir = report_dir


def regional(s: Settings, t: RegionTarget) -> tuple[Settings, dict[str, Any]]:
    fields = {**plan.overrides(s, t), **clients.region_fields(s, t.region)}
    return plan.regional_settings(s, fields), fields


@task(cache_policy=NO_CACHE, name="preflight", task_run_name="preflight {t.region}")
def preflight(s: Settings, t: RegionTarget) -> str | None:
    """The data-sovereignty guard per region: the workspace must live where the plan says it does."""
    rs, _ = regional(s, t)
    clients.prepare_target(rs)
    return live_region(clients.ml_client(rs), rs)


@task(cache_policy=NO_CACHE, name="region", task_run_name="rollout {t.region}")
def region_rollout(s: Settings, t: RegionTarget, wave: int, parameters: dict[str, Any]) -> RegionRun:
    """One region's rollout as a run of the rollout deployment, waited for; its outcome read from its endpoint."""
    rs, fields = regional(s, t)
    ml, log = clients.ml_client(rs), get_run_logger()
    run = RegionRun(t.region, wave, rs.endpoint_name, before=serving_image(ml, rs.endpoint_name))
    if holder := wait_unlocked(ml, rs.endpoint_name):
        log.info("%s: waited for rollout %s (an earlier run's) to release the endpoint", t.region, holder)
    run.started = time.time()
    child = run_deployment(ROLLOUT_DEPLOYMENT, parameters=parameters, job_variables={"env": plan.child_env(os.environ, fields)},
                           timeout=None, flow_run_name=f"rollout-{t.region}")
    run.ended, run.flow_run = time.time(), str(child.id)
    run.url = flow_run_url(get_current_settings().ui_url or "", child.id)
    endpoint = get_endpoint(ml, rs.endpoint_name)
    run.outcome, run.reason = outcome_of(child.state.is_completed(), child.state.message or "",
                                         last_rollout(endpoint.tags if endpoint else {}), str(child.id)[:8])
    run.after = serving_image(ml, rs.endpoint_name)
    if found := recorded_outcome(rs.reports_dir, str(child.id)[:8]):  # on this machine: its SLO verdicts
        run.verdicts = slo_summary(json.loads((Path(found["report_dir"]) / "rollout.json").read_text()))
    log.info("%s: %s (%s)", t.region, run.outcome, run.reason)
    return run


def _worker_online() -> bool:
    """A worker of the pool is polling (a temporary server has none: the regional runs would wait forever)."""
    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(WORK_POOL)  # a server without the pool answers its workers' filter with a 404
        except ObjectNotFound:
            return False
        return any(w.status == WorkerStatus.ONLINE for w in client.read_workers_for_work_pool(WORK_POOL))


@flow(name="regions", log_prints=False)
def regions(image: str | None = None, model_asset: str | None = None) -> dict[str, Any]:
    """Roll the settings' model and image out to every region in R1_REGIONS, wave by wave (R1_WAVES)."""
    s = load_settings()
    if found := plan.problems(s):
        raise PlanRefused(found)
    waves = plan.waves(s)
    moved = [f"R1_REGIONS: {t.region} workspace {t.workspace} lives in {where}"
             for t in s.regions if (where := preflight(s, t)) != t.region]
    if moved:
        raise PlanRefused(moved)  # before any change anywhere
    if not _worker_online():
        raise PlanRefused([f"no worker polls the {WORK_POOL} work pool, so no regional rollout would start: run "
                           "this through the deployment (`./r1 run regions/regions` starts the local worker) or start "
                           f"one (`prefect worker start --pool {WORK_POOL}`)"])
    parameters = {k: v for k, v in (("image", image), ("model_asset", model_asset)) if v}
    runs = [RegionRun(t.region, i, plan.overrides(s, t)["endpoint_name"]) for i, w in enumerate(waves) for t in w]
    log, outcome, reason = get_run_logger(), "promoted", f"{len(runs)} region(s) in {len(waves)} wave(s)"
    for i, wave in enumerate(waves):
        if i and s.wave_bake_seconds:
            log.info("baking %g s before wave %d", s.wave_bake_seconds, i + 1)
            time.sleep(s.wave_bake_seconds)
        log.info("wave %d: %s", i + 1, ", ".join(t.region for t in wave))
        done: list[RegionRun] = []
        for start in range(0, len(wave), s.wave_concurrency):
            futures = [region_rollout.submit(s, t, i, parameters) for t in wave[start:start + s.wave_concurrency]]
            done += [f.result() for f in futures]
        runs = [next((d for d in done if d.region == r.region), r) for r in runs]
        if stop := halted(done):
            outcome, reason = "stopped", f"wave {i + 1}: {stop}; later waves not touched"
            break
    summary = publish(s.reports_dir / f"regions-{datetime.now(UTC):%Y%m%dT%H%M%SZ}", outcome, reason, runs)
    if outcome == "stopped":  # a failed run in the UI, like a rolled-back rollout
        raise FleetStopped(reason, summary["report_dir"])
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.regions", description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the outcome as one JSON object on stdout")
    parser.add_argument("--image", help="a digest-pinned image for every region (default: build in each region)")
    parser.add_argument("--model-asset", help="the model asset name:version (default: R1_MODEL_ASSET)")
    args = parser.parse_args(argv)
    s = load_settings()  # invalid settings: exit 2 before Prefect starts
    if found := plan.problems(s):
        raise SettingsError(found)
    with contextlib.redirect_stdout(sys.stderr):
        state = regions(image=args.image, model_asset=args.model_asset, return_state=True)
    print_run_url(state.state_details.flow_run_id)
    result = state.result(raise_on_failure=False)
    if isinstance(result, SettingsError):
        raise result
    if isinstance(result, FleetStopped):
        result = {"outcome": "stopped", "reason": str(result), "report_dir": result.report_dir}
    elif isinstance(result, BaseException):
        result = {"outcome": "failed", "reason": f"{type(result).__name__}: {result}"}
    print(json.dumps(result) if args.json else f"regions {result['outcome']}: {result['reason']}")
    return EXIT_OK if result["outcome"] == "promoted" else EXIT_FAILED


if __name__ == "__main__":
    run_cli(main)
