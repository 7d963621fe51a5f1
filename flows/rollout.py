"""The blue/green rollout: from "image built" to "serving 100 %", or back to the old colour with the reason.

    python -m flows.rollout [--json]        settings from R1_* variables or .env

Exit 0: promoted (or nothing to do); 1: rolled back; 2: invalid input, or refused before any change.

Each step reads the live endpoint first and acts on the difference (``tasks.reconcile``), so a re-run
after success is a no-op and a re-run after a crash or kill converges. Rollback is an explicit,
idempotent step driven by live state, never a side effect of task retries.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from azure.core.exceptions import HttpResponseError, ResourceNotFoundError, ServiceRequestError
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.context import FlowRunContext
from prefect.exceptions import PausedRun
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput

from tasks import clients, image as image_step
from tasks.autoscale import autoscale_name, build_autoscale
from tasks.cli import EXIT_FAILED, EXIT_INVALID, EXIT_OK, run_cli
from tasks.deployment import delete_deployment, desired_deployment, fetch_logs, spec_hash, start_deployment, wait_ready
from tasks.endpoint import ensure_endpoint, read_live_state, scoring_base, set_traffic, update_tags
from tasks.model_asset import ensure_model_asset
from tasks.loadtest import BackgroundLoad, LoadSpec, Target, evaluate, evaluate_by_deployment, run_load, summarise
from tasks.policy import blocking, gate
from tasks.policy_bundle import bundle_from_files
from tasks.reconcile import RolloutPlan, plan_rollout, rollback_split, split
from tasks.rollout_lock import LOCK_TAG, RolloutLocked, blocking_holder, me
from tasks.rollout_report import Timeline, plot, publish
from tasks.scoring_auth import BearerProvider, scoring_bearer
from tasks.settings import Settings, load_settings
from tasks.smoke import run_smoke
from tasks.slo import Verdict


class Refused(Exception):
    """Refused before any change (policy, region, image, a rollout already running): exit 2."""

    report_dir: str | None = None


class RolledBack(Exception):
    """The new colour failed a gate; the old colour serves 100 % again: exit 1."""

    report_dir: str | None = None


def _with_report(err: Exception, r: Rollout) -> Exception:
    err.report_dir = str(r.timeline.folder)
    return err


def _transient(task: Any, run: Any, state: Any) -> bool:
    """Retry a step only on ARM throttling/outages; azure-core already retried each call."""
    try:
        state.result()
    except HttpResponseError as err:
        return err.status_code in (429, 500, 502, 503, 504)
    except ServiceRequestError:
        return True
    except Exception:
        return False
    return False


arm_step = task(cache_policy=NO_CACHE, retries=3, retry_delay_seconds=[1, 5, 15], retry_condition_fn=_transient)
gate_step = task(cache_policy=NO_CACHE)


@dataclass
class Rollout:
    """What the steps share: settings, clients, the plan and the evidence gathered so far."""

    settings: Settings
    ml: Any
    timeline: Timeline
    run_id: str
    image: str = ""
    plan: RolloutPlan | None = None
    bearer: BearerProvider | None = None
    base_url: str = ""
    live_records: list = field(default_factory=list)
    shares: list[tuple[float, float]] = field(default_factory=list)

    @property
    def endpoint(self) -> str:
        return self.settings.endpoint_name

    def target(self, deployment: str | None = None) -> Target:
        return Target(self.base_url, self.bearer, deployment, clients.scoring_ca(self.settings))

    def traffic(self) -> dict[str, int]:
        return read_live_state(self.ml, self.endpoint).traffic


# 1. Preflight ---------------------------------------------------------------------------------------
@arm_step(name="preflight")
def preflight(r: Rollout) -> str:
    """Region from the live workspace, the digest-pinned image, the policy gate: refuse before changing anything."""
    s = r.settings
    location = (r.ml.workspaces.get(s.workspace).location or "").lower()
    if location not in s.allowed_regions:
        raise Refused(f"workspace {s.workspace} is in {location!r}, outside R1_ALLOWED_REGIONS {s.allowed_regions}")
    try:
        pinned = image_step.resolve(s)
    except image_step.ImageError as err:
        raise Refused(str(err)) from None
    findings = gate(bundle_from_files(s.model_copy(update={"image": pinned})), s.policy_waivers, date.today())
    errors = blocking(findings)
    if errors:
        raise Refused("policy gate: " + "; ".join(f"{f.rule}: {f.message}" for f in errors))
    r.timeline.add("preflight", "ok", f"region {location}; image {pinned}; {len(findings)} finding(s), none blocking")
    return pinned


# 2-3. Image and endpoint ----------------------------------------------------------------------------
@gate_step(name="image")
def provide_image(r: Rollout) -> None:
    r.timeline.add("image", "ok", image_step.provide(r.settings, r.image))


@arm_step(name="endpoint")
def endpoint(r: Rollout) -> None:
    ep, changes = ensure_endpoint(r.ml, r.settings)
    r.base_url = scoring_base(ep)
    r.bearer = scoring_bearer(lambda: r.ml.online_endpoints.get_keys(r.endpoint))
    r.timeline.add("endpoint", "ok", ", ".join(changes) or "up to date")


@arm_step(name="model")
def model(r: Rollout) -> None:
    r.timeline.add("model", "ok", ensure_model_asset(r.ml, r.settings))


@arm_step(name="lock")
def lock(r: Rollout) -> None:
    """Refuse while another rollout holds the endpoint; take the lease otherwise."""
    mine = me(r.run_id)
    tags = r.ml.online_endpoints.get(r.endpoint).tags or {}
    holder = blocking_holder(tags, mine)
    if holder:
        raise RolloutLocked(f"rollout {holder.run} on {holder.host} (pid {holder.pid}) holds {r.endpoint}")
    update_tags(r.ml, r.endpoint, {LOCK_TAG: mine.encode()})
    holder = blocking_holder(r.ml.online_endpoints.get(r.endpoint).tags or {}, mine)
    if holder:  # lost a race between read and write
        raise RolloutLocked(f"rollout {holder.run} took {r.endpoint} first")


@arm_step(name="unlock")
def unlock(r: Rollout) -> None:
    tags = r.ml.online_endpoints.get(r.endpoint).tags or {}
    if LOCK_TAG in tags and blocking_holder(tags, me(r.run_id)) is None:
        update_tags(r.ml, r.endpoint, {}, remove=(LOCK_TAG,))


# 4-5. Stage and ready -------------------------------------------------------------------------------
@arm_step(name="stage")
def stage(r: Rollout) -> None:
    """The new colour at 0 %; an idle colour with a stale spec is deleted first, never duplicated."""
    plan, s = r.plan, r.settings
    desired = desired_deployment(s, plan.new, r.image)
    if plan.resume:
        r.timeline.add("stage", "skipped", f"{plan.new} already runs this spec", r.traffic())
        return
    live = read_live_state(r.ml, r.endpoint)
    if plan.new in live.deployments:
        if live.deployments[plan.new].traffic or live.deployments[plan.new].mirror:
            set_traffic(r.ml, r.endpoint, {k: v for k, v in live.traffic.items() if k != plan.new} or {}, {})
        delete_deployment(r.ml, r.endpoint, plan.new)
    start_deployment(r.ml, desired)
    r.timeline.add("stage", "ok", f"{plan.new} staged at 0 % (spec {spec_hash(desired)})", r.traffic())


@gate_step(name="ready")
def ready(r: Rollout) -> None:
    probe = r.settings.probes.readiness
    deadline = probe.window_seconds * 1.5 + 60
    result = wait_ready(r.ml, r.endpoint, r.plan.new, deadline)
    if not result.ready:
        logs = fetch_logs(r.ml, r.endpoint, r.plan.new)
        r.timeline.extra["new_colour_logs"] = logs
        raise RolledBack(result.error or "not ready")
    r.timeline.add("ready", "ok", f"{r.plan.new} ready after {result.waited_s:.1f} s")


# 6-8. Smoke, mirror, load gate ----------------------------------------------------------------------
@gate_step(name="smoke")
def smoke(r: Rollout) -> None:
    result = run_smoke(r.base_url, r.bearer, r.plan.new, r.settings.model_id, clients.scoring_ca(r.settings),
                       max_tokens=r.settings.load_gate.max_tokens)
    r.timeline.extra["smoke"] = result.checks
    if not result.passed:
        raise RolledBack("smoke test failed: " + "; ".join(result.problems[:5]))
    r.timeline.add("smoke", "ok", f"{len(result.checks)} chat completions from {r.plan.new} healthy")


BAKE_EXTENSION = 3.0  # a thin bake may run up to this many times R1_BAKE_SECONDS to gather enough samples


def _bake_spec(s: Settings) -> LoadSpec:
    """Live traffic through the endpoint (no routing header) for the whole mirror and shift phase.

    Bounded by the longest the phase can take (the load precomputes its arrival schedule), and
    stopped as soon as the phase ends."""
    g = s.load_gate
    bakes = (len(s.traffic_steps) + 1) * s.bake_seconds * BAKE_EXTENSION
    longest = bakes + (s.approval_timeout_seconds if s.require_approval else 0) + 600
    return LoadSpec(rate=g.bake_rate, max_concurrency=g.concurrency * 4, duration_s=longest,
                    max_tokens=g.max_tokens, model=s.model_id, seed=g.seed, timeout_s=s.request_timeout_ms / 1000)


def _verdict_detail(verdict: Verdict) -> str:
    return f"{verdict.status} on {verdict.samples} requests: " + "; ".join(verdict.reasons)


@gate_step(name="mirror")
def mirror(r: Rollout, live: BackgroundLoad) -> None:
    """Shadow a share of live traffic to the new colour; live answers (old colour) must stay healthy."""
    s, plan = r.settings, r.plan
    traffic = r.traffic()
    set_traffic(r.ml, r.endpoint, traffic, {plan.new: s.mirror_percent})
    start = live.now()
    time.sleep(s.bake_seconds)
    end = live.now()
    set_traffic(r.ml, r.endpoint, traffic, {})
    live.settle(end, s.request_timeout_ms / 1000)
    verdicts = evaluate_by_deployment(live.records(), s.slo, (start, end))
    bad = {k: v for k, v in verdicts.items() if v.status == "fail"}
    r.timeline.add("mirror", "failed" if bad else "ok",
                   f"{s.mirror_percent} % mirrored to {plan.new} for {s.bake_seconds:g} s; "
                   + "; ".join(f"{k}: {_verdict_detail(v)}" for k, v in verdicts.items()), traffic)
    if bad:
        raise RolledBack(f"live traffic degraded while mirroring: {_verdict_detail(next(iter(bad.values())))}")


@gate_step(name="load-gate")
def load_gate(r: Rollout) -> None:
    s, g = r.settings, r.settings.load_gate
    spec = LoadSpec(concurrency=g.concurrency, requests=g.requests, warmup=g.warmup, max_tokens=g.max_tokens,
                    model=s.model_id, seed=g.seed, timeout_s=s.request_timeout_ms / 1000)
    run = asyncio.run(run_load(r.target(r.plan.new), spec))
    verdict = evaluate(run.measured(), s.slo)
    summary = summarise(run.measured(), s.slo)
    r.timeline.extra["load_gate"] = {k: summary[k] for k in ("requests_completed", "requests_failed", "ttft_ms",
                                                             "tpot_ms", "e2e_ms", "requests_per_s") if k in summary}
    r.timeline.add("load-gate", "ok" if verdict.passed else "failed",
                   f"{r.plan.new}, concurrency {g.concurrency}: {_verdict_detail(verdict)}", verdict=verdict.to_dict())
    if not verdict.passed:
        raise RolledBack(f"load gate on {r.plan.new}: {_verdict_detail(verdict)}")


# 9-10. Shift with bake and analysis, optional approval ---------------------------------------------
class Approval(RunInput):
    approve: bool
    reason: str = ""


def approve_promotion(r: Rollout) -> None:
    if not r.settings.require_approval:
        return
    r.timeline.add("approval", "info", f"waiting up to {r.settings.approval_timeout_seconds} s for approval")
    try:
        decision = pause_flow_run(wait_for_input=Approval.with_initial_data(approve=False),
                                  timeout=r.settings.approval_timeout_seconds, key="promote-100")
    except Exception as err:  # FlowPauseTimeout and friends: no answer is a no
        raise RolledBack(f"promotion not approved in time ({type(err).__name__})") from None
    if not decision.approve:
        raise RolledBack(f"promotion rejected: {decision.reason or 'no reason given'}")
    r.timeline.add("approval", "ok", f"approved: {decision.reason}")


def _bake(r: Rollout, live: BackgroundLoad) -> tuple[dict[str, Verdict], float]:
    """Bake on live traffic; while the new colour has too few samples, keep baking (bounded), then judge."""
    s = r.settings
    start = live.now()
    time.sleep(s.bake_seconds)
    while True:
        end = live.now()
        live.settle(end, s.request_timeout_ms / 1000)  # requests still in flight are judged too
        verdicts = evaluate_by_deployment(live.records(), s.slo, (start, end))
        thin = verdicts.get(r.plan.new) is None or verdicts[r.plan.new].status == "inconclusive"
        if not thin or end - start >= s.bake_seconds * BAKE_EXTENSION:
            return verdicts, end - start
        time.sleep(min(1.0, s.bake_seconds / 2))


@gate_step(name="shift")
def shift(r: Rollout, percent: int, live: BackgroundLoad) -> None:
    s, plan = r.settings, r.plan
    traffic = split(plan.new, plan.old, percent)
    set_traffic(r.ml, r.endpoint, traffic, {})
    r.shares.append((live.now(), percent))
    if s.bake_seconds <= 0:
        r.timeline.add(f"shift {percent} %", "ok", "no bake configured", traffic)
        return
    r.timeline.add(f"shift {percent} %", "info", f"baking {s.bake_seconds:g} s on live traffic", traffic)
    verdicts, baked = _bake(r, live)
    new_verdict = verdicts.get(plan.new)
    failed = [f"{name}: {_verdict_detail(v)}" for name, v in verdicts.items() if v.status == "fail"]
    if new_verdict is None or new_verdict.status == "inconclusive":
        failed.append(f"{plan.new}: not enough live requests to judge in {baked:.1f} s "
                      f"(raise R1_BAKE_SECONDS or R1_LOAD_GATE__BAKE_RATE)")
    r.timeline.add(f"shift {percent} %", "failed" if failed else "ok",
                   f"baked {baked:.1f} s; " + "; ".join(f"{k}: {_verdict_detail(v)}" for k, v in verdicts.items()),
                   traffic, verdict={k: v.to_dict() for k, v in verdicts.items()})
    if failed:
        raise RolledBack(f"at {percent} %: " + "; ".join(failed))


# 11-12. Autoscale and retire ------------------------------------------------------------------------
@arm_step(name="autoscale")
def autoscale(r: Rollout) -> None:
    s, plan = r.settings, r.plan
    monitor = clients.monitor_client(s)
    if plan.old:
        with contextlib.suppress(ResourceNotFoundError):
            monitor.autoscale_settings.delete(s.resource_group, autoscale_name(r.endpoint, plan.old))
    if not s.autoscale.enabled:
        r.timeline.add("autoscale", "skipped", "R1_AUTOSCALE__ENABLED=false")
        return
    dep = r.ml.online_deployments.get(name=plan.new, endpoint_name=r.endpoint)
    setting = build_autoscale(s.autoscale, dep.id, s.region, tags={"endpoint": r.endpoint})
    monitor.autoscale_settings.create_or_update(s.resource_group, autoscale_name(r.endpoint, plan.new), setting)
    r.timeline.add("autoscale", "ok", f"{plan.new}: {s.autoscale.minimum}-{s.autoscale.maximum} instances, "
                   f"GPU > {s.autoscale.gpu_scale_out_percent:g} % "
                   f"or p95 > {s.autoscale.latency_p95_scale_out_ms:g} ms")


@arm_step(name="retire")
def retire(r: Rollout) -> None:
    old = r.plan.old
    if old is None:
        return
    if r.settings.keep_old_warm:
        r.timeline.add("retire", "skipped", f"{old} kept warm at 0 % for instant rollback")
        return
    delete_deployment(r.ml, r.endpoint, old)
    r.timeline.add("retire", "ok", f"{old} deleted")


# Rollback -------------------------------------------------------------------------------------------
@arm_step(name="rollback")
def rollback(r: Rollout, reason: str) -> None:
    """Old colour to 100 % first, then remove (or keep) the new one. Safe to run any number of times."""
    plan = r.plan
    live = read_live_state(r.ml, r.endpoint)
    old = plan.old if plan.old in live.deployments else None
    set_traffic(r.ml, r.endpoint, rollback_split(plan.new, old), {})
    kept = r.settings.keep_failed_deployment
    if not kept:
        delete_deployment(r.ml, r.endpoint, plan.new)
    r.timeline.add("rollback", "ok", f"{old or 'nothing'} serves 100 %; {plan.new} "
                   f"{'kept at 0 % for forensics' if kept else 'deleted'}. Reason: {reason}", r.traffic())


# The flow -------------------------------------------------------------------------------------------
def _run_id() -> str:
    ctx = FlowRunContext.get()
    return str(ctx.flow_run.id)[:8] if ctx and ctx.flow_run else uuid.uuid4().hex[:8]


@flow(name="rollout", log_prints=False)
def rollout(image: str | None = None, traffic_steps: list[int] | None = None, bake_seconds: float | None = None,
            mirror_percent: int | None = None, require_approval: bool | None = None) -> dict[str, Any]:
    """Blue/green rollout of the settings' model and image. Parameters override the matching R1_* settings."""
    log = get_run_logger()
    overrides = {k: v for k, v in dict(image=image, traffic_steps=traffic_steps, bake_seconds=bake_seconds,
                                       mirror_percent=mirror_percent, require_approval=require_approval).items()
                 if v is not None}
    settings = load_settings(**overrides)
    run_id = _run_id()
    folder = settings.reports_dir / f"rollout-{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{run_id}"
    r = Rollout(settings, None, Timeline(run_id, folder), run_id)
    clients.prepare_target(settings)
    r.ml = clients.ml_client(settings)
    try:
        r.image = preflight(r)
        provide_image(r)
        endpoint(r)
        lock(r)
    except (Refused, RolloutLocked, image_step.ImageError) as err:
        publish(r.timeline, "refused", str(err))
        raise _with_report(Refused(str(err)), r) from None
    try:
        model(r)
        return _reconcile(r, log)
    finally:
        unlock(r)


def _reconcile(r: Rollout, log: Any) -> dict[str, Any]:
    desired = spec_hash(desired_deployment(r.settings, "blue", r.image))
    r.plan = plan = plan_rollout(read_live_state(r.ml, r.endpoint), desired)
    r.timeline.add("plan", "info", f"{plan.action}: {plan.reason}"
                   + (f"; not touching {', '.join(plan.strays)}" if plan.strays else ""), r.traffic())
    log.info("rollout %s: %s (%s)", r.run_id, plan.action, plan.reason)
    if plan.action == "noop" or (plan.action == "finish" and r.settings.keep_old_warm):
        return _outcome(r, "no-op", plan.reason + (" (kept warm: R1_KEEP_OLD_WARM)" if plan.old else ""))
    if plan.action == "rollout":
        try:
            _promote(r)
        except Exception as err:  # any failure after the plan: the old colour must serve again
            reason = str(err) if isinstance(err, RolledBack) else f"{type(err).__name__}: {err}"
            log.error("rolling back: %s", reason)
            rollback(r, reason)
            _outcome(r, "rolled back", reason)
            raise _with_report(RolledBack(reason), r) from None
    autoscale(r)
    retire(r)
    return _outcome(r, "promoted", f"{plan.new} serves 100 %")


def _promote(r: Rollout) -> None:
    s = r.settings
    stage(r)
    ready(r)
    smoke(r)
    load_gate(r)
    bake = _bake_spec(s)
    with BackgroundLoad(r.target(), bake) as live:
        try:
            if s.mirror_percent and r.plan.old:
                mirror(r, live)
            for percent in s.traffic_steps if r.plan.old else [100]:
                if percent == 100:
                    approve_promotion(r)
                shift(r, percent, live)
        finally:
            r.live_records = live.records()


def _outcome(r: Rollout, outcome: str, reason: str) -> dict[str, Any]:
    plot(r.live_records, r.shares, r.plan.new if r.plan else "", r.timeline.folder / "rollout.png")
    publish(r.timeline, outcome, reason)
    return {"outcome": outcome, "reason": reason, "new": r.plan.new if r.plan else None,
            "old": r.plan.old if r.plan else None, "traffic": r.traffic(), "report_dir": str(r.timeline.folder)}


# Command line ---------------------------------------------------------------------------------------
def recorded_failure(settings: Settings, state: Any) -> Exception | None:
    """The outcome the run's own report recorded, as its exception, when Prefect's final state lost it.

    A pause that times out is failed by Prefect itself ("never resumed"), so the result is not the
    RolledBack the flow raised after rolling back; the report on disk still says what happened."""
    run_id = str(state.state_details.flow_run_id or "")[:8]
    for path in sorted(settings.reports_dir.glob(f"rollout-*-{run_id}/rollout.json")) if run_id else []:
        record = json.loads(path.read_text())
        kind = {"rolled back": RolledBack, "refused": Refused}.get(record.get("outcome"))
        if kind:
            err = kind(record.get("reason", ""))
            err.report_dir = str(path.parent)
            return err
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.rollout", description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the outcome as one JSON object on stdout")
    args = parser.parse_args(argv)
    settings = load_settings()  # invalid settings: exit 2 before Prefect starts
    with contextlib.redirect_stdout(sys.stderr):
        state = rollout(return_state=True)
    result = state.result(raise_on_failure=False)
    if isinstance(result, Exception) and not isinstance(result, (Refused, RolledBack)):
        result = recorded_failure(settings, state) or result
    if isinstance(result, Exception):
        code = EXIT_INVALID if isinstance(result, Refused) else EXIT_FAILED
        label = {Refused: "refused", RolledBack: "rolled back"}.get(type(result), "failed")
        reason = f"{type(result).__name__}: {result}" if label == "failed" else str(result)
        outcome = {"outcome": label, "reason": reason, "report_dir": getattr(result, "report_dir", None)}
    else:
        code, outcome = EXIT_OK, result
    print(json.dumps(outcome) if args.json else f"rollout {outcome['outcome']}: {outcome['reason']}"
          + (f"\nreport: {outcome['report_dir']}" if outcome.get("report_dir") else ""))
    return code


if __name__ == "__main__":
    run_cli(main)
