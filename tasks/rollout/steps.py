"""The rollout's steps: plain functions of explicit inputs that act on the endpoint and return what they decided.

Each step reads the live endpoint first and acts on the difference, so a re-run converges. A gate that
fails returns a ``StepResult`` whose ``failure`` says why (the flow rolls back); a refusal before any
change raises ``Refused``. The flow (``flows/rollout.py``) wraps each one in a Prefect task and records
the results in the timeline; the decisions they lean on are pure functions in ``reconcile``, ``bake``,
``lock`` and ``tasks.loadtest.slo``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from typing import Any

from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

from tasks.azureml import access
from tasks.azureml.autoscale import autoscale_name, build_autoscale
from tasks.azureml.deployment import delete_deployment, desired_deployment, fetch_logs, spec_hash, start_deployment, wait_ready
from tasks.azureml.endpoint import ensure_endpoint, read_live_state, scoring_base, set_traffic, update_tags
from tasks.azureml.model_asset import ensure_model_asset
from tasks.image.build import BlobOpener, build_from_settings
from tasks.image.context import ContextError, is_pinned
from tasks.azureml.scoring import scoring_bearer
from tasks.loadtest.client import BackgroundLoad, Destination, run_load
from tasks.loadtest.metrics import summarise
from tasks.loadtest.slo import evaluate, evaluate_by_deployment
from tasks.loadtest.spec import LoadSpec
from tasks.policy.bundle import bundle_from_files
from tasks.policy.gate import gate, refusal
from tasks.events import emit
from tasks.rollout import bake, lock, tags
from tasks.rollout.progress import Waiting, watched_sleep
from tasks.rollout.reconcile import SPEC_HASH_TAG, RolloutPlan, plan_rollout, rollback_split, split
from tasks.rollout.smoke import run_smoke
from tasks.rollout.tags import IMAGE_TAG, MODEL_TAG
from tasks.settings import Settings

LOAD_GATE_FIGURES = ("requests_completed", "requests_failed", "ttft_ms", "tpot_ms", "e2e_ms", "requests_per_s")


class Refused(Exception):
    """Refused before any change (policy, region, image, bake, a rollout already running): exit 2."""

    report_dir: str | None = None


class RolledBack(Exception):
    """The new colour failed a gate; the old colour serves 100 % again: exit 1."""

    report_dir: str | None = None


@dataclass(frozen=True)
class StepResult:
    """What one step did: a timeline line, the split it left, its verdict, evidence for the report."""

    step: str
    status: str  # ok | skipped | failed | info
    detail: str
    traffic: dict[str, int] = field(default_factory=dict)
    verdict: dict[str, Any] | None = None
    evidence: dict[str, Any] = field(default_factory=dict)  # kept in rollout.json (smoke checks, logs, ...)
    failure: str | None = None  # set when a gate failed: the rollback's reason


def failed(step: str, detail: str, failure: str, **kw: Any) -> StepResult:
    return StepResult(step, "failed", detail, failure=failure, **kw)


# Before any change ------------------------------------------------------------------------------------
def preflight(ml: Any, authz: Any, s: Settings) -> StepResult:
    """Bakes that can be judged, the principal's permissions (``authz``: the authorization client), region from
    the live workspace, a given image pinned by digest, the policy gate (the Dockerfile's FROM included)."""
    problem = bake.unjudgeable_bake(s)
    if problem:
        raise Refused(problem)
    try:
        workspace = ml.workspaces.get(s.workspace)
    except HttpResponseError as err:  # a principal that may not read the workspace: the refusal below says so
        if err.status_code != 403:
            raise
        workspace = None
    # RBAC: the actions the rollout needs, from the caller's own permissions (the registry's too when it builds)
    denied = access.refusal(s, authz, workspace.container_registry if workspace else None)
    if denied:
        raise Refused(denied)
    location = ((workspace or ml.workspaces.get(s.workspace)).location or "").lower()
    if location not in s.allowed_regions:
        raise Refused(f"workspace {s.workspace} is in {location!r}, outside R1_ALLOWED_REGIONS {s.allowed_regions}")
    if s.image and not is_pinned(s.image):
        raise Refused(f"R1_IMAGE={s.image!r} is not pinned by digest: set <registry>/<repository>@sha256:<digest>, "
                      "or leave R1_IMAGE empty to build docker/ in the workspace's registry (docs/image-build.md)")
    findings = gate(bundle_from_files(s), s.policy_waivers, date.today())
    if refused := refusal(findings):
        raise Refused(refused)
    return StepResult("preflight", "ok", f"region {location}; {len(findings)} finding(s), none blocking")


def image(ml: Any, acr: Any, open_blob: BlobOpener, s: Settings) -> tuple[str, StepResult]:
    """The digest-pinned image to deploy: ``R1_IMAGE`` as given, else built (or reused) from docker/."""
    if s.image:
        return s.image, StepResult("image", "ok", f"{s.image} (R1_IMAGE, pinned; no build)")
    try:
        built = build_from_settings(ml, acr, open_blob, s)
    except ContextError as err:
        raise Refused(str(err)) from None
    return built.image, StepResult("image", "ok", built.line(), evidence={"image_build": built.summary()})


def endpoint(ml: Any, s: Settings, ca: str | bool) -> tuple[Destination, StepResult]:
    """Create or align the endpoint; returns where (and how) to score it."""
    ep, changes = ensure_endpoint(ml, s)
    bearer = scoring_bearer(lambda: ml.online_endpoints.get_keys(s.endpoint_name))
    return Destination(scoring_base(ep), bearer, None, ca), StepResult("endpoint", "ok", ", ".join(changes) or "up to date")


def take_lock(ml: Any, name: str, mine: lock.Holder) -> None:
    """Refuse while another rollout holds the endpoint; take the lease otherwise."""
    lease = lock.acquire(ml.online_endpoints.get(name).tags or {}, mine)
    update_tags(ml, name, {lock.LOCK_TAG: lease})
    lock.confirm(ml.online_endpoints.get(name).tags or {}, mine)


def release_lock(ml: Any, name: str, mine: lock.Holder) -> None:
    if lock.releasable(ml.online_endpoints.get(name).tags or {}, mine):
        update_tags(ml, name, {}, remove=(lock.LOCK_TAG,))


# The plan ------------------------------------------------------------------------------------------
def model(ml: Any, s: Settings) -> StepResult:
    return StepResult("model", "ok", ensure_model_asset(ml, s))


def plan(ml: Any, s: Settings, image: str) -> tuple[RolloutPlan, StepResult]:
    live = read_live_state(ml, s.endpoint_name)
    decided = plan_rollout(live, spec_hash(desired_deployment(s, "blue", image)))
    strays = f"; not touching {', '.join(decided.strays)}" if decided.strays else ""
    return decided, StepResult("plan", "info", f"{decided.action}: {decided.reason}{strays}", live.traffic)


# Stage, ready, smoke, load gate --------------------------------------------------------------------
def stage(ml: Any, s: Settings, plan: RolloutPlan, image: str) -> StepResult:
    """The new colour at 0 %; a colour with a stale spec is replaced (the old colour to 100 % first)."""
    name = s.endpoint_name
    if plan.resume:
        return StepResult("stage", "skipped", f"{plan.new} already runs this spec", read_live_state(ml, name).traffic)
    live = read_live_state(ml, name)
    if plan.new in live.deployments:
        stale = live.deployments[plan.new]
        if stale.traffic or stale.mirror:
            set_traffic(ml, name, rollback_split(plan.new, plan.old), {})
        delete_deployment(ml, name, plan.new)
    desired = desired_deployment(s, plan.new, image)
    start_deployment(ml, desired)
    return StepResult("stage", "ok", f"{plan.new} staged at 0 % (spec {spec_hash(desired)})",
                      read_live_state(ml, name).traffic)


def ready_deadline_s(s: Settings) -> float:
    """The readiness probe's whole window, with room for the platform's own provisioning."""
    return s.probes.readiness.window_seconds * 1.5 + 60


def ready(ml: Any, s: Settings, plan: RolloutPlan, waiting: Waiting) -> StepResult:
    """Poll the new colour's provisioning until ready or the deadline; ``waiting`` hears how long it has waited."""
    deadline = ready_deadline_s(s)
    result = wait_ready(ml, s.endpoint_name, plan.new, deadline, sleep=watched_sleep("ready", deadline, waiting))
    if not result.ready:
        error = result.error or "not ready"
        return failed("ready", error, error, evidence={"new_colour_logs": fetch_logs(ml, s.endpoint_name, plan.new)})
    return StepResult("ready", "ok", f"{plan.new} ready after {result.waited_s:.1f} s")


def smoke(s: Settings, dest: Destination, plan: RolloutPlan) -> StepResult:
    result = run_smoke(dest.base_url, dest.auth, plan.new, s.model_id, dest.verify, max_tokens=s.load_gate.max_tokens)
    evidence = {"smoke": result.checks}
    if not result.passed:
        problems = "; ".join(result.problems[:5])
        return failed("smoke", problems, f"smoke test failed: {problems}", evidence=evidence)
    return StepResult("smoke", "ok", f"{len(result.checks)} chat completions from {plan.new} healthy", evidence=evidence)


def load_gate_spec(s: Settings) -> LoadSpec:
    g = s.load_gate
    return LoadSpec(concurrency=g.concurrency, requests=g.requests, warmup=g.warmup, max_tokens=g.max_tokens,
                    model=s.model_id, seed=g.seed, timeout_s=s.request_timeout_ms / 1000)


def load_gate(s: Settings, dest: Destination, plan: RolloutPlan) -> StepResult:
    """A closed-loop load test aimed at the new colour alone (routing header), judged by the SLO."""
    run = asyncio.run(run_load(replace(dest, deployment=plan.new), load_gate_spec(s)))
    verdict = evaluate(run.measured(), s.slo)
    summary = summarise(run.measured(), s.slo)
    detail = f"{plan.new}, concurrency {s.load_gate.concurrency}: {bake.detail(verdict)}"
    result = StepResult("load-gate", "ok" if verdict.passed else "failed", detail, verdict=verdict.to_dict(),
                        evidence={"load_gate": {k: summary[k] for k in LOAD_GATE_FIGURES if k in summary}})
    if not verdict.passed:
        return replace(result, failure=f"load gate on {plan.new}: {bake.detail(verdict)}")
    return result


# Mirror and shift, on live traffic -------------------------------------------------------------------
def mirror(ml: Any, s: Settings, plan: RolloutPlan, live: BackgroundLoad, waiting: Waiting) -> StepResult:
    """Shadow a share of live traffic to the new colour; live answers (old colour) must stay healthy."""
    name = s.endpoint_name
    traffic = read_live_state(ml, name).traffic
    set_traffic(ml, name, traffic, {plan.new: s.mirror_percent})
    start = live.now()
    watched_sleep("mirror", s.bake_seconds, waiting)(s.bake_seconds)
    end = live.now()
    set_traffic(ml, name, traffic, {})
    live.settle(end, s.request_timeout_ms / 1000)
    verdicts = evaluate_by_deployment(live.records(), s.slo, (start, end))
    bad = [v for v in verdicts.values() if v.status == "fail"]
    detail = f"{s.mirror_percent} % mirrored to {plan.new} for {s.bake_seconds:g} s; {bake.summary(verdicts)}"
    if bad:
        return failed("mirror", detail, f"live traffic degraded while mirroring: {bake.detail(bad[0])}", traffic=traffic)
    return StepResult("mirror", "ok", detail, traffic)


def shift(ml: Any, s: Settings, plan: RolloutPlan, percent: int, live: BackgroundLoad,
          progress: Callable[[StepResult], Any], waiting: Waiting) -> tuple[StepResult, tuple[float, int]]:
    """Move ``percent`` of live traffic to the new colour, bake, judge; returns the result and when it moved.
    ``progress`` records that the bake started, ``waiting`` hears how long it has baked."""
    step = f"shift {percent} %"
    traffic = split(plan.new, plan.old, percent)
    set_traffic(ml, s.endpoint_name, traffic, {})
    moved = (live.now(), percent)
    if s.bake_seconds <= 0:
        return StepResult(step, "ok", "no bake configured", traffic), moved
    progress(StepResult(step, "info", f"baking {s.bake_seconds:g} s on live traffic", traffic))
    pause = watched_sleep(step, s.bake_seconds, waiting)
    start = live.now()
    pause(s.bake_seconds)
    while True:
        end = live.now()
        live.settle(end, s.request_timeout_ms / 1000)  # requests still in flight are judged too
        verdicts = evaluate_by_deployment(live.records(), s.slo, (start, end))
        if not bake.keep_baking(verdicts, plan.new, end - start, s.bake_seconds):
            break
        pause(min(1.0, s.bake_seconds / 2))
    problems = bake.failures(verdicts, plan.new, end - start)
    result = StepResult(step, "failed" if problems else "ok", f"baked {end - start:.1f} s; {bake.summary(verdicts)}",
                        traffic, verdict={k: v.to_dict() for k, v in verdicts.items()})
    return (replace(result, failure=f"at {percent} %: " + "; ".join(problems)) if problems else result), moved


# After promotion, and rollback -----------------------------------------------------------------------
def autoscale(ml: Any, monitor: Any, s: Settings, plan: RolloutPlan) -> StepResult:
    """Autoscale follows the serving colour: the old colour's setting goes, the new one's is written."""
    if plan.old:
        with contextlib.suppress(ResourceNotFoundError):
            monitor.autoscale_settings.delete(s.resource_group, autoscale_name(s.endpoint_name, plan.old))
    if not s.autoscale.enabled:
        return StepResult("autoscale", "skipped", "R1_AUTOSCALE__ENABLED=false")
    a = s.autoscale
    dep = ml.online_deployments.get(name=plan.new, endpoint_name=s.endpoint_name)
    setting = build_autoscale(a, dep.id, s.region, tags={"endpoint": s.endpoint_name})
    monitor.autoscale_settings.create_or_update(s.resource_group, autoscale_name(s.endpoint_name, plan.new), setting)
    return StepResult("autoscale", "ok", f"{plan.new}: {a.minimum}-{a.maximum} instances, GPU > "
                      f"{a.gpu_scale_out_percent:g} % or p95 > {a.latency_p95_scale_out_ms:g} ms")


def retire(ml: Any, s: Settings, plan: RolloutPlan) -> StepResult | None:
    """Record the colour rolled away from on the endpoint (what ``rollback`` puts back), then retire it or keep it warm."""
    if plan.old is None:
        return None
    with contextlib.suppress(ResourceNotFoundError):
        old = ml.online_deployments.get(name=plan.old, endpoint_name=s.endpoint_name).tags or {}
        if old.get(IMAGE_TAG) and old.get(SPEC_HASH_TAG):
            was = tags.Previous(plan.old, old[IMAGE_TAG], old[SPEC_HASH_TAG], old.get(MODEL_TAG, ""), _now())
            update_tags(ml, s.endpoint_name, {tags.PREVIOUS_TAG: was.encode()})
    if s.keep_old_warm:
        return StepResult("retire", "skipped", f"{plan.old} kept warm at 0 % for instant rollback")
    delete_deployment(ml, s.endpoint_name, plan.old)
    return StepResult("retire", "ok", f"{plan.old} deleted")


def rollback(ml: Any, s: Settings, plan: RolloutPlan, reason: str) -> StepResult:
    """Old colour to 100 % first, then remove (or keep) the new one. Safe to run any number of times."""
    name = s.endpoint_name
    old = plan.old if plan.old in read_live_state(ml, name).deployments else None
    set_traffic(ml, name, rollback_split(plan.new, old), {})
    if not s.keep_failed_deployment:
        delete_deployment(ml, name, plan.new)
    fate = "kept at 0 % for forensics" if s.keep_failed_deployment else "deleted"
    return StepResult("rollback", "ok", f"{old or 'nothing'} serves 100 %; {plan.new} {fate}. Reason: {reason}",
                      read_live_state(ml, name).traffic)


def remember_outcome(ml: Any, s: Settings, plan: RolloutPlan, outcome: str, reason: str, run: str) -> None:
    """The outcome on the endpoint (``status`` reads it from anywhere) and as a Prefect event automations hang on."""
    last = tags.LastRollout(outcome, reason, run, plan.new, plan.old, _now())
    update_tags(ml, s.endpoint_name, {tags.LAST_ROLLOUT_TAG: last.encode()})
    emit(f"r1.rollout.{outcome.replace(' ', '-')}", s.endpoint_name, {"new": plan.new, "old": plan.old, "run": run},
         kept_warm=str(bool(s.keep_old_warm and plan.old and outcome == "promoted")).lower())


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
