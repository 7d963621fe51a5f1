"""Build the serving image from docker/ with ACR Tasks in the workspace's registry (or reuse the build of the
same context) and register the ``r1-vllm`` environment pinned to its digest.

    python -m flows.build_image [--json]     settings from R1_* variables or .env (R1_IMAGE is ignored)

Exit 0: built or reused; 1: the build failed (the reason and the log's last lines are in the report);
2: invalid input (settings, a missing context, a Dockerfile the policy gate refuses — nothing uploaded).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from datetime import UTC, date, datetime
from functools import partial
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from tasks import clients
from tasks.cli import EXIT_FAILED, EXIT_OK, InputError, run_cli
from tasks.image.build import ImageBuildFailed, build_from_settings
from tasks.image.context import ContextError
from tasks.image.report import write_report
from tasks.policy.bundle import bundle_from_files
from tasks.policy.gate import IMAGE_CATEGORIES, gate, refusal
from tasks.prefect_home import print_run_url
from tasks.settings import load_settings

build = task(build_from_settings, name="build", task_run_name="build docker/", cache_policy=NO_CACHE)


@flow(name="build-image", log_prints=False)
def build_image() -> dict[str, Any]:
    """Gate the Dockerfile, then build or reuse; the outcome as a report (artifact and files)."""
    s = load_settings()
    if refused := refusal(gate(bundle_from_files(s), s.policy_waivers, date.today()), IMAGE_CATEGORIES):
        raise InputError(refused)  # before any upload
    folder = s.reports_dir / f"build-image-{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}"
    clients.prepare_target(s)
    try:
        built = build(clients.ml_client(s), clients.registry_client(s), partial(clients.blob_client, s), s)
    except ContextError as err:
        raise InputError(str(err)) from None
    except ImageBuildFailed as err:
        err.report_dir = str(write_report(folder, {"outcome": "failed", "reason": str(err), "run_id": err.run_id},
                                          err.log_tail))
        raise
    get_run_logger().info("image %s", built.line())
    return {**built.summary(), "report_dir": str(write_report(folder, {"outcome": "ok", **built.summary()}))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.build_image", description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the outcome as one JSON object on stdout")
    args = parser.parse_args(argv)
    load_settings()  # invalid settings: exit 2 before Prefect starts
    with contextlib.redirect_stdout(sys.stderr):
        state = build_image(return_state=True)
    print_run_url(state.state_details.flow_run_id)
    result = state.result(raise_on_failure=False)
    if isinstance(result, InputError):
        raise result
    if isinstance(result, BaseException):
        failure = {"outcome": "failed", "reason": f"{type(result).__name__}: {result}",
                   "report_dir": getattr(result, "report_dir", None)}
        print(json.dumps(failure) if args.json else f"image build failed: {failure['reason']}")
        return EXIT_FAILED
    print(json.dumps(result) if args.json else f"image {result['image']}\nenvironment {result['environment']} "
          f"({'built' if result['built'] else 'reused'}; report: {Path(result['report_dir'])})")
    return EXIT_OK


if __name__ == "__main__":
    run_cli(main)
