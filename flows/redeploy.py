"""Redeploy: pick up a patched upstream base image or a new model version, through the usual rollout.

    python -m flows.redeploy [--json]     settings from R1_* variables or .env (R1_IMAGE is ignored)

Exit 0: redeployed, or nothing changed (the report says what it checked); 1: the build failed or the rollout
rolled back; 2: invalid input, or refused before any change (a bad or unknown R1_UPSTREAM_BASE, nothing
serving, another rollout holding the endpoint, the policy gate).

The runbook: import the tracked base (``R1_UPSTREAM_BASE``) into the workspace's registry and learn its digest;
compare it and the newest model version with what the serving colour was built and deployed from; if either
moved, build docker/ FROM the imported copy pinned by digest (policy gate first) and run the rollout flow as a
subflow, with all its gates. The decisions live in ``tasks.redeploy``.
"""

from __future__ import annotations

import argparse
import json
from datetime import date
from functools import partial
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.rollout import rollout
from tasks import clients
from tasks.cli import InputError, run_cli
from tasks.image.build import ImageBuildFailed, build_from_settings
from tasks.policy.bundle import bundle_from_files
from tasks.policy.gate import IMAGE_CATEGORIES, gate, refusal
from tasks.redeploy.base import import_base
from tasks.redeploy.inputs import (
    InputChange, Serving, base_change, latest_model, model_change, needs_redeploy, serving, upstream_base,
)
from tasks.reports import publish_table
from tasks.rollout import lock
from tasks.rollout.steps import Refused, RolledBack
from tasks.run_report import cli_run, current_run_id, publish_run, reported, run_folder
from tasks.settings import Settings, load_settings

FLOW = "redeploy"
import_step = task(import_base, name="import base", cache_policy=NO_CACHE)
build = task(build_from_settings, name="build", task_run_name="build docker/", cache_policy=NO_CACHE)


@flow(name=FLOW, log_prints=False)
def redeploy() -> dict[str, Any]:
    """Check the base and the model; when either moved, build and roll out. The report says old -> new."""
    s = load_settings()
    tracked = upstream_base(s.upstream_base)  # invalid input: before any cloud call
    if tracked and s.dockerfile:
        raise InputError("R1_DOCKERFILE is hand-written: redeploy re-renders docker/ FROM the imported base; "
                         "unset R1_DOCKERFILE or R1_UPSTREAM_BASE")
    run_id, log = current_run_id(), get_run_logger()
    folder = run_folder(s.reports_dir, FLOW, run_id)
    record: dict[str, Any] = {"run_id": run_id, "endpoint": s.endpoint_name}
    clients.prepare_target(s)
    ml, acr = clients.ml_client(s), clients.registry_client(s)
    try:
        now = serving(ml, s.endpoint_name)
        if now is None:
            raise Refused(f"nothing serves on endpoint {s.endpoint_name}: run the rollout first")
        pinned = import_step(ml, acr, s, tracked) if tracked else None
        changes = [base_change(now.base_image, pinned, tracked), model_change(now.model, latest_model(ml, s), s)]
        record.update(serving=now.deployment, inputs=[c.record() for c in changes])
        for change in changes:
            log.info("%s", change.line())
        if not needs_redeploy(changes):
            return _finish(folder, record, "no-op", "nothing changed: " + "; ".join(c.line() for c in changes))
        _check_unlocked(ml, s, run_id)
        image = _image(ml, acr, s, changes[0], pinned, now)
        record["image"] = {"old": now.image, "new": image}
        result = rollout(image=image, model_asset=changes[1].new)  # a subflow, with all the rollout's gates
    except (Refused, lock.RolloutLocked) as err:
        raise reported(Refused(str(err)), FLOW, folder, {**record, "outcome": "refused", "reason": str(err)}) from None
    except RolledBack as err:
        rolled = {**record, "outcome": "rolled back", "reason": str(err), "rollout_report": err.report_dir}
        raise reported(RolledBack(str(err)), FLOW, folder, rolled) from None
    except ImageBuildFailed as err:
        raise reported(err, FLOW, folder, {**record, "outcome": "failed", "reason": str(err),
                                           "image_build_log": err.log_tail}) from None
    record["rollout"] = {"outcome": result["outcome"], "report_dir": result["report_dir"]}
    moved = "; ".join(c.line() for c in changes if c.changed)
    return _finish(folder, record, "redeployed" if result["outcome"] == "promoted" else result["outcome"], moved)


def _check_unlocked(ml: Any, s: Settings, run_id: str) -> None:
    """Refuse before building while another rollout holds the endpoint (the subflow takes the lock itself)."""
    holder = lock.blocking_holder(ml.online_endpoints.get(s.endpoint_name).tags or {}, lock.me(run_id))
    if holder is not None:
        raise Refused(f"rollout {holder.run} on {holder.host} holds endpoint {s.endpoint_name}; try again later")


def _image(ml: Any, acr: Any, s: Settings, base: InputChange, pinned: str | None, now: Serving) -> str:
    """The serving image as is when only the model moved; else docker/ built FROM the imported copy, gated."""
    if not base.changed and now.image:
        return now.image
    built_from = load_settings(base_image=pinned) if pinned else s
    if refused := refusal(gate(bundle_from_files(built_from), s.policy_waivers, date.today()), IMAGE_CATEGORIES):
        raise Refused(refused)
    return build(ml, acr, partial(clients.blob_client, s), built_from).image


def _finish(folder: Path, record: dict[str, Any], outcome: str, reason: str) -> dict[str, Any]:
    record.update(outcome=outcome, reason=reason)
    publish_table("redeploy-inputs", [{k: str(v) if v is not None else "" for k, v in c.items()}
                                      for c in record.get("inputs", [])], description=f"redeploy {outcome}")
    return {**record, "report_dir": publish_run(FLOW, folder, record)}


# Command line ---------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.redeploy", description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the outcome as one JSON object on stdout")
    args = parser.parse_args(argv)
    upstream_base(load_settings().upstream_base)  # invalid input: exit 2 before Prefect starts
    code, outcome = cli_run(lambda: redeploy(return_state=True))
    print(json.dumps(outcome, default=str) if args.json else f"redeploy {outcome['outcome']}: {outcome['reason']}"
          + (f"\nreport: {outcome['report_dir']}" if outcome.get("report_dir") else ""))
    return code


if __name__ == "__main__":
    run_cli(main)
