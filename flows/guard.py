"""Watch the serving colour after a promotion that kept the old colour warm; on a breach, emit the event the
rollback automation runs on; when the window ends clean, retire the warm colour.

    python -m flows.guard [--minutes M] [--interval-seconds S] [--json]    settings from R1_* variables or .env

Exit 0: the window ended clean (warm colour retired), or nothing to guard (the report says why), or the endpoint
changed during the window (a rollback or a rollout took over); 1: breach (``r1.guard.breach`` emitted; the
report says what breached); 2: invalid input, or the retirement refused because a rollout holds the endpoint.

This module is the runbook: every interval, read the serving colour's Azure Monitor metrics for that interval
and judge them (``tasks.guard.judge``, the rollout's SLO limits where they apply). ``prefect.yaml`` runs it on
``r1.rollout.promoted`` with ``r1.kept-warm=true``, and runs ``rollback`` on ``r1.guard.breach``.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from tasks import clients
from tasks.azureml.transient import transient
from tasks.cli import run_cli
from tasks.guard import steps
from tasks.guard.judge import limits
from tasks.guard.plan import Watch
from tasks.guard.report import publish
from tasks.guard.steps import Breached, Check
from tasks.rollout.lock import RolloutLocked, me
from tasks.rollout.steps import Refused
from tasks.run_report import cli_run, current_run_id, run_folder
from tasks.settings import load_settings

arm = task(cache_policy=NO_CACHE, retries=3, retry_delay_seconds=[1, 5, 15], retry_condition_fn=transient)

watch = arm(steps.watch, name="watch")
endpoint_id = arm(steps.endpoint_id, name="endpoint id")
check = arm(steps.check, name="check", task_run_name="check {guarded.serving}")
breach = task(steps.breach, name="breach event", cache_policy=NO_CACHE)
retire = arm(steps.retire_warm, name="retire", task_run_name="retire {guarded.warm}")


@flow(name="guard", log_prints=False)
def guard(minutes: float | None = None, interval_seconds: float | None = None) -> dict[str, Any]:
    """Judge the serving colour every interval for the window; parameters override R1_GUARD__*."""
    given = {k: v for k, v in dict(minutes=minutes, interval_seconds=interval_seconds).items() if v is not None}
    s = load_settings(**({"guard": given} if given else {}))
    started, run_id, log = time.time(), current_run_id(), get_run_logger()
    folder, limit, name = run_folder(s.reports_dir, "guard", run_id), limits(s), s.endpoint_name
    clients.prepare_target(s)
    ml, monitor = clients.ml_client(s), clients.monitor_client(s)
    record: dict[str, Any] = {"endpoint": name, "run": run_id, "minutes": s.guard.minutes,
                              "interval_seconds": s.guard.interval_seconds, "limits": asdict(limit)}
    checks: list[Check] = []

    def finish(outcome: str, reason: str, **extra: Any) -> dict[str, Any]:
        log.info("guard %s: %s", outcome, reason)
        record.update(outcome=outcome, reason=reason, **extra)
        return {**record, "report_dir": publish(folder, record, checks, limit, started)}

    guarded = watch(ml, name)
    if not isinstance(guarded, Watch):
        return finish("nothing to guard", guarded)
    record.update(serving=guarded.serving, warm=guarded.warm)
    resource = endpoint_id(ml, name)
    end = started + s.guard.minutes * 60
    log.info("guarding %s (warm: %s) until %s s from now, a check every %g s", guarded.serving, guarded.warm,
             round(end - started), s.guard.interval_seconds)
    at = started
    while at < end or not checks:
        at = min(max(at + s.guard.interval_seconds, time.time()), end) if at < end else at  # never judge a stale window
        time.sleep(max(0.0, at - time.time()))
        if (now := watch(ml, name)) != guarded:
            return finish("ended", f"the endpoint changed during the window: {now}")
        found = check(monitor, resource, guarded, at - s.guard.interval_seconds, at, limit)
        checks.append(found)
        log.info("check %d: %s", len(checks), "; ".join(found.verdict.reasons))
        if found.verdict.status == "fail":
            reason = breach(name, guarded, found)
            result = finish("breach", reason, event=steps.BREACH_EVENT)
            err = Breached(reason)
            err.report_dir = result["report_dir"]
            raise err
    try:
        retired = retire(ml, name, guarded, me(run_id))
    except RolloutLocked as err:
        result = finish("refused", f"the window ended clean but {guarded.warm} was not retired: {err}")
        refused = Refused(result["reason"])
        refused.report_dir = result["report_dir"]
        raise refused from None
    verdicts = [c.verdict.status for c in checks]
    return finish("clean", retired, verdicts={v: verdicts.count(v) for v in sorted(set(verdicts))})


# Command line ---------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.guard", description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, help="the guard window (default R1_GUARD__MINUTES)")
    parser.add_argument("--interval-seconds", type=float, help="between checks (default R1_GUARD__INTERVAL_SECONDS)")
    parser.add_argument("--json", action="store_true", help="print the outcome as one JSON object on stdout")
    args = parser.parse_args(argv)
    given = {k: v for k, v in dict(minutes=args.minutes, interval_seconds=args.interval_seconds).items()
             if v is not None}
    load_settings(**({"guard": given} if given else {}))  # invalid settings or flags: exit 2 before Prefect starts
    code, outcome = cli_run(lambda: guard(minutes=args.minutes, interval_seconds=args.interval_seconds,
                                          return_state=True))
    print(json.dumps(outcome, default=str) if args.json else f"guard {outcome['outcome']}: {outcome['reason']}"
          + (f"\nreport: {outcome['report_dir']}" if outcome.get("report_dir") else ""))
    return code


if __name__ == "__main__":
    run_cli(main)
