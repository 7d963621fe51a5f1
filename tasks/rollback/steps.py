"""The rollback's steps against the endpoint: read what to do, put the warm colour back, settle the other one.

Each reads live state first, so a re-run converges: a second rollback finds the previous spec serving.
The flow (``flows/rollback.py``) wraps them in Prefect tasks; the decision is ``plan.plan_rollback``.
"""

from __future__ import annotations

from typing import Any

from tasks.azureml.deployment import delete_deployment, desired_deployment, spec_hash
from tasks.azureml.endpoint import get_endpoint, read_live_state, set_traffic, update_tags
from tasks.rollback.plan import RollbackPlan, plan_rollback
from tasks.rollout import steps as rollout_steps
from tasks.rollout.reconcile import RolloutPlan
from tasks.rollout.tags import PREVIOUS_TAG, Previous, last_rollout, previous
from tasks.settings import Settings, load_settings


def decide(ml: Any, name: str) -> RollbackPlan:
    """The live endpoint, its records and the serving colour's spec, into a plan (or ``Refused``)."""
    live = read_live_state(ml, name)
    tags = (get_endpoint(ml, name).tags or {}) if live.endpoint_exists else {}
    serving = next((d for d in live.deployments.values() if d.traffic == 100), None)
    return plan_rollback(name, live, serving.spec_hash if serving else None, previous(tags), last_rollout(tags))


def put_back(ml: Any, name: str, plan: RollbackPlan) -> dict[str, int]:
    """One traffic update: the warm colour 100 %, the colour rolled away from 0 %, no mirror."""
    set_traffic(ml, name, {plan.target: 100}, {})
    return read_live_state(ml, name).traffic


def follow_autoscale(ml: Any, monitor: Any, s: Settings, plan: RollbackPlan) -> str:
    """Autoscale follows the serving colour, as after a promotion (the rollout's own step)."""
    result = rollout_steps.autoscale(ml, monitor, s, RolloutPlan("rollout", plan.target, plan.serving, plan.reason))
    return result.detail


def settle_rolled_away(ml: Any, name: str, colour: str, delete: bool) -> str:
    """What became of the colour rolled away from: deleted when asked, else kept at 0 % for forensics."""
    live = read_live_state(ml, name)
    if colour not in live.deployments:
        return f"{colour} deleted (by the rollout's retire step)"
    if delete:
        delete_deployment(ml, name, colour)
        return f"{colour} deleted (delete_rolled_away)"
    return f"{colour} kept at {live.deployments[colour].traffic} % for forensics"


def restage_parameters(was: Previous) -> dict[str, str]:
    """The rollout's parameters that stage the recorded spec again (a record without a model keeps the settings')."""
    return {"image": was.image, **({"model_asset": was.model} if was.model else {})}


def staged_hash(was: Previous) -> str:
    """The spec hash the rollout will stage for the recorded image and model under today's settings."""
    return spec_hash(desired_deployment(load_settings(**restage_parameters(was)), "blue", was.image))


def keep_record(ml: Any, name: str, was: Previous) -> None:
    """The rollout that restaged ``was`` recorded the colour it rolled away from; a rollback keeps naming the
    spec it put back, so a second rollback is a no-op, not a roll forward."""
    update_tags(ml, name, {PREVIOUS_TAG: was.encode()})
