"""The offline plan: render the specs from settings, run the policy gate and the capacity planner,
report. Nothing here talks to Azure; the rollout's preflight runs the same gate.

    python -m flows.plan [--json] [--endpoint-yaml F] [--deployment-yaml F] [--dockerfile F]
                         [--render-to DIR]

Exit 0: no unwaived error finding; 1: blocking findings; 2: invalid settings or input (stderr).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from tasks.cli import EXIT_FAILED, EXIT_OK, InputError, run_cli
from tasks.policy.gate import gate
from tasks.policy.bundle import bundle_from_files
from tasks.policy.report import build_report, to_markdown
from tasks.prefect_home import print_run_url
from tasks.reports import publish_markdown, write_json, write_text
from tasks.rollout.bake import unjudgeable_bake
from tasks.settings import load_settings
from tasks.plan.specs import render_all


def _path(value: str | None) -> Path | None:
    return Path(value) if value else None


def evaluate(
    endpoint_yaml: str | None = None, deployment_yaml: str | None = None, dockerfile: str | None = None
) -> dict[str, Any]:
    """Settings -> bundle -> findings -> report. Pure apart from reading the given files.

    Settings under which no bake could ever be judged are invalid input (exit 2), as in the rollout's preflight."""
    settings = load_settings()
    problem = unjudgeable_bake(settings)
    if problem:
        raise InputError(problem)
    bundle = bundle_from_files(settings, _path(endpoint_yaml), _path(deployment_yaml), _path(dockerfile))
    return build_report(settings, bundle, gate(bundle, settings.policy_waivers, date.today()))


@flow(name="plan", log_prints=False)
def plan(
    endpoint_yaml: str | None = None,
    deployment_yaml: str | None = None,
    dockerfile: str | None = None,
    render_to: str | None = None,
) -> dict[str, Any]:
    """Render, check, report. With ``render_to``, write the specs there only if the gate passes."""
    logger = get_run_logger()
    settings = load_settings()
    report = evaluate(endpoint_yaml, deployment_yaml, dockerfile)
    out = settings.reports_dir / f"plan-{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}"
    markdown = to_markdown(report)
    write_json(out / "plan.json", report)
    write_text(out / "plan.md", markdown)
    publish_markdown("plan", markdown, description="Policy gate and capacity plan")
    if render_to and report["ok"]:
        render_all(settings, Path(render_to))
        logger.info("rendered specs under %s", render_to)
    elif render_to:
        logger.warning("blocking findings: nothing rendered under %s", render_to)
    errors = sum(1 for f in report["findings"] if f["severity"] == "error" and not f["waived"])
    logger.info("plan %s: %d finding(s), %d blocking; report in %s",
                "passed" if report["ok"] else "blocked", len(report["findings"]), errors, out)
    return {**report, "report_dir": str(out)}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m flows.plan", description="Render the specs, run the policy gate and capacity planner, report."
    )
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object on stdout")
    parser.add_argument("--endpoint-yaml", help="check this endpoint YAML instead of the rendered one")
    parser.add_argument("--deployment-yaml", help="check this deployment YAML instead of the rendered one")
    parser.add_argument("--dockerfile", help="check this Dockerfile instead of the rendered one")
    parser.add_argument("--render-to", help="write docker/Dockerfile and deployments/*.yml here if the gate passes")
    return parser.parse_args(argv)


def summary(report: dict[str, Any]) -> str:
    lines = [f"plan {'PASSED' if report['ok'] else 'BLOCKED'} ({report['report_dir']})"]
    lines += [
        f"  {f['severity']:<7} {f['rule']}{' (waived)' if f['waived'] else ''}: {f['message']}"
        for f in report["findings"]
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Invalid settings or files fail here, before Prefect starts: exit 2 with one line per problem.
    evaluate(args.endpoint_yaml, args.deployment_yaml, args.dockerfile)
    with contextlib.redirect_stdout(sys.stderr):  # the SDK prints progress dots; stdout is the report's
        state = plan(args.endpoint_yaml, args.deployment_yaml, args.dockerfile, args.render_to, return_state=True)
    print_run_url(state.state_details.flow_run_id)
    report = state.result()
    print(json.dumps(report) if args.json else summary(report))
    return EXIT_OK if report["ok"] else EXIT_FAILED


if __name__ == "__main__":
    run_cli(main)
