"""Rotate a key-auth endpoint's keys without dropping a request: the secondary, a grace period, the primary.

    python -m flows.rotate_keys [--grace-seconds S] [--json]     settings from R1_* variables or .env

Exit 0: both keys regenerated and verified, or nothing to rotate (aml_token / aad_token endpoints);
1: a key could not be regenerated or does not score (the report says which; a key already changed stays
changed); 2: refused, nothing changed (invalid input, no endpoint, a rollout holds the endpoint's lock).

This module is the runbook; what one key's rotation does is ``tasks.keys``. Each new key is proven by real
scoring requests through the endpoint before the next step. Clients of this project score with the primary
key and fetch it again on a 401 (``tasks.azureml.scoring``), so they ride through the primary's change.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from tasks import clients
from tasks.azureml.endpoint import get_endpoint, scoring_base
from tasks.azureml.transient import transient
from tasks.cli import InputError, run_cli
from tasks.keys import ORDER, Rotated, no_keys, regenerate, verify, verify_spec
from tasks.loadtest.client import Destination
from tasks.reports import publish_table
from tasks.rollout import steps as rollout_steps
from tasks.rollout.lock import RolloutLocked, me
from tasks.rollout.steps import Refused
from tasks.run_report import cli_run, current_run_id, publish_run, reported, run_folder
from tasks.settings import Settings, load_settings

arm = task(cache_policy=NO_CACHE, retries=3, retry_delay_seconds=[1, 5, 15], retry_condition_fn=transient)
take_lock, release_lock = arm(rollout_steps.take_lock, name="lock"), arm(rollout_steps.release_lock, name="unlock")

NEGATIVE_GRACE = "grace_seconds must be 0 or more (--grace-seconds S)"


@task(name="rotate", task_run_name="rotate {which}", cache_policy=NO_CACHE)
def rotate_one(ml: Any, s: Settings, dest: Destination, which: str) -> Rotated:
    """Regenerate one key and score with it; the key itself never leaves this task (no result to persist)."""
    return verify(dest, regenerate(ml, s.endpoint_name, which), which, verify_spec(s))


@flow(name="rotate-keys", log_prints=False)
def rotate_keys(grace_seconds: float = 60.0) -> dict[str, Any]:
    """Regenerate the secondary key, verify it, wait ``grace_seconds`` for consumers, then the primary."""
    if grace_seconds < 0:
        raise InputError(NEGATIVE_GRACE)
    s = load_settings()
    run_id = current_run_id()
    folder = run_folder(s.reports_dir, "rotate-keys", run_id)
    record: dict[str, Any] = {"outcome": "", "endpoint": s.endpoint_name, "run": run_id, "grace_seconds": grace_seconds}
    clients.prepare_target(s)
    ml, mine, name, log = clients.ml_client(s), me(run_id), s.endpoint_name, get_run_logger()
    rotated: list[Rotated] = []
    try:
        ep = get_endpoint(ml, name)
        if ep is None:
            raise Refused(f"endpoint {name} does not exist")
        record["auth_mode"] = ep.auth_mode
        if reason := no_keys(ep.auth_mode):
            log.info(reason)
            record.update(outcome="nothing to rotate", detail=reason)
            return {**record, "report_dir": publish_run("rotate-keys", folder, record)}
        dest = Destination(scoring_base(ep), None, None, clients.data_plane_ca(s))
        take_lock(ml, name, mine)
        try:
            for which in ORDER:
                rotated.append(done := rotate_one(ml, s, dest, which))
                log.info("%s key: %s", which, done.detail)
                if which != ORDER[-1] and grace_seconds:
                    log.info("grace period: %g s for consumers to move to the new %s key", grace_seconds, which)
                    time.sleep(grace_seconds)
        finally:
            release_lock(ml, name, mine)
    except (Refused, RolloutLocked) as err:
        raise reported(Refused(str(err)), "rotate-keys", folder, {**record, "outcome": "refused", "detail": str(err)}) \
            from None
    except Exception as err:
        record.update(outcome="failed", detail=f"{type(err).__name__}: {err}", keys=[r.row() for r in rotated])
        raise reported(err, "rotate-keys", folder, record) from None
    record.update(outcome="rotated", detail=f"{' then '.join(ORDER)} key regenerated and verified",
                  keys=[r.row() for r in rotated])
    publish_table("rotate-keys-keys", record["keys"], description=f"keys of {name}")
    return {**record, "report_dir": publish_run("rotate-keys", folder, record)}


# Command line ---------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.rotate_keys", description=__doc__.splitlines()[0])
    parser.add_argument("--grace-seconds", type=float, default=60.0,
                        help="wait between the secondary and the primary key, for consumers to move (default 60)")
    parser.add_argument("--json", action="store_true", help="print the outcome as one JSON object on stdout")
    args = parser.parse_args(argv)
    if args.grace_seconds < 0:
        raise InputError(NEGATIVE_GRACE)
    load_settings()  # invalid settings: exit 2 before Prefect starts
    code, outcome = cli_run(lambda: rotate_keys(grace_seconds=args.grace_seconds, return_state=True))
    print(json.dumps(outcome) if args.json else f"rotate-keys {outcome['outcome']}: "
          f"{outcome.get('detail') or outcome['reason']}" + (f"\nreport: {outcome['report_dir']}"
                                                             if outcome.get("report_dir") else ""))
    return code


if __name__ == "__main__":
    run_cli(main)
