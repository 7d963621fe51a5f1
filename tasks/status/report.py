"""The status report in words: what the command line prints and the markdown artifact shows."""

from __future__ import annotations

from typing import Any

from tasks.reports import markdown_table
from tasks.status.drift import Drift
from tasks.status.observe import EndpointStatus


def _split(split: dict[str, int]) -> str:
    return ", ".join(f"{k} {v} %" for k, v in split.items()) or "none"


def _last(last: dict[str, Any] | None) -> str:
    if not last:
        return "none recorded"
    return (f"{last['outcome']} at {last['at']} (run {last['run']}; new {last['new']}, old {last['old']}): "
            f"{last['reason']}")


def lines(status: EndpointStatus, found: Drift) -> list[str]:
    """Plain text, one fact a line; each deployment on an indented line."""
    if not status.exists:
        text = [f"endpoint {status.name}: does not exist"]
    else:
        text = [f"endpoint {status.name} ({status.auth_mode} auth): live {_split(status.traffic)}; "
                f"mirror {_split(status.mirror)}"]
        text += [f"  {d.name}: {d.provisioning_state}, {d.instance_count} instance(s), image {d.image or '-'}, "
                 f"spec {d.spec_hash or '-'}, autoscale {d.autoscale.line() if d.autoscale else 'none'}"
                 for d in status.deployments]
        text += [f"lock: {status.lock or 'free'}", f"last rollout: {_last(status.last_rollout)}"]
    text.append(f"plan: {found.plan}")
    text += [f"upstream: {u}" for u in found.upstream]
    return text + ([f"DRIFT: {f}" for f in found.findings]
                   or ["in sync: a rollout with these settings would do nothing"])


def markdown(status: EndpointStatus, found: Drift) -> str:
    verdict = "DRIFT" if found.findings else "in sync"
    table = markdown_table([d.row() for d in status.deployments])
    facts = [f"- {line}" for line in lines(status, found) if not line.startswith("  ")]
    return "\n".join([f"# status of {status.name}: {verdict}", "", *table, "", *facts])
