"""Drift: how the endpoint differs from what the settings say, as what a rollout (or redeploy) would do about it.

Nothing here changes anything or builds: the desired image is ``R1_IMAGE`` or the ``r1-vllm`` environment
already registered for the current build context (none: a rollout would build one), the desired spec is the
rollout's own (``desired_deployment``), and the decision is the rollout's reconciler (``plan_rollout`` and
``settled``) on the live endpoint. Autoscale is compared with ``R1_AUTOSCALE__*`` (a promotion writes it),
and redeploy's read-only check says whether the base or the model moved upstream.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tasks.azureml.deployment import desired_deployment, spec_hash
from tasks.azureml.endpoint import get_endpoint, owned_fields_differ, read_live_state
from tasks.azureml.environment import find_build
from tasks.image.context import ContextError, build_context
from tasks.plan.specs import build_endpoint
from tasks.redeploy.inputs import InputChange, upstream_drift
from tasks.rollout.reconcile import LiveState, RolloutPlan, plan_rollout, settled
from tasks.settings import Autoscale, Settings
from tasks.status.observe import EndpointStatus, Scaling


NO_BUILD = "a rollout would build a new image (none is built for the current build context)"


@dataclass(frozen=True)
class Drift:
    plan: str  # what a rollout with the current settings would do, in words ("no-op: ..." when in sync)
    findings: list[str] = field(default_factory=list)  # one sentence per difference; empty: in sync
    image: str | None = None  # the image a rollout would deploy (None: it would build one first)
    upstream: list[str] = field(default_factory=list)  # redeploy's check, one line per input

    def record(self) -> dict[str, Any]:
        return {"drift": bool(self.findings), "findings": self.findings, "plan": self.plan, "desired_image": self.image,
                "upstream": self.upstream}


def desired_image(ml: Any, s: Settings) -> tuple[str | None, str]:
    """(the image a rollout would deploy, where it comes from); None when it would have to build one."""
    if s.image:
        return s.image, "R1_IMAGE"
    ctx = build_context(s)
    found = find_build(ml, ctx.hash)
    if found is None:
        return None, f"no r1-vllm environment is registered for the current build context {ctx.tag}"
    return found.image, f"{found.reference} (build context {ctx.tag})"


def _would(decided: RolloutPlan) -> str:
    if decided.action == "finish":
        return f"a rollout would retire {decided.old}: {decided.reason}"
    return f"a rollout would stage {decided.new} and shift traffic to it: {decided.reason}"


def rollout_drift(live: LiveState, desired_hash: str | None, keep_old_warm: bool) -> tuple[str, list[str]]:
    """(the plan in words, findings) from the live state and the desired spec hash (None: no image built yet)."""
    if not live.endpoint_exists:
        return "rollout: create the endpoint and stage blue", ["the endpoint does not exist: a rollout would create it"]
    if desired_hash is None:
        return "rollout: build a new image first", [NO_BUILD]
    decided = plan_rollout(live, desired_hash)
    if reason := settled(decided, keep_old_warm):
        return f"no-op: {reason}", []
    return f"{decided.action}: {decided.reason}", [_would(decided)]


def autoscale_drift(status: EndpointStatus, a: Autoscale) -> list[str]:
    """The serving colour's autoscale setting against R1_AUTOSCALE__* (written at promotion)."""
    if not status.traffic:
        return []
    serving = max(status.traffic, key=lambda n: status.traffic[n])
    live = next(d.autoscale for d in status.deployments if d.name == serving)
    wanted = Scaling(a.minimum, a.maximum, a.default, True) if a.enabled else None
    if live == wanted:
        return []
    says = wanted.line() if wanted else "none (R1_AUTOSCALE__ENABLED=false)"
    return [f"autoscale of {serving} is {live.line() if live else 'none'}, the settings say {says}: "
            "the next promotion writes it"]


def upstream_findings(changes: list[InputChange]) -> list[str]:
    return [f"upstream {c.input} moved ({c.old or '-'} -> {c.new or '-'}): redeploy would pick it up"
            for c in changes if c.changed]


def drift(ml: Any, acr: Any, s: Settings, status: EndpointStatus) -> Drift:
    """Everything that differs, read-only; the reconcile plan of a rollout with these settings."""
    live = read_live_state(ml, s.endpoint_name)
    if not live.endpoint_exists:
        plan, findings = rollout_drift(live, None, s.keep_old_warm)
        return Drift(plan, findings)
    findings = [f"endpoint {change}: a rollout would align it"
                for change in owned_fields_differ(get_endpoint(ml, s.endpoint_name), build_endpoint(s))]
    try:
        image, source = desired_image(ml, s)
    except ContextError as err:
        return Drift("refused: the build context cannot be read", [f"a rollout would be refused: {err}"])
    desired = spec_hash(desired_deployment(s, "blue", image)) if image else None
    plan, planned = rollout_drift(live, desired, s.keep_old_warm)
    changes = upstream_drift(ml, acr, s)
    findings += planned + autoscale_drift(status, s.autoscale) + upstream_findings(changes)
    return Drift(f"{plan} (image: {source})", findings, image, [c.line() for c in changes])
