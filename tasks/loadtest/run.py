"""Load testing as Prefect tasks, and the generator's public interface in one import.

The rollout and the ``loadtest`` flow use these names (stable):

- ``Destination``, ``LoadSpec``: where to send (base URL, key or token provider, deployment header, CA)
  and how hard (closed/open loop, bounds, prompts, output length).
- ``run_load(dest, spec, ...) -> LoadRun``: async, returns one ``RequestRecord`` per request.
- ``BackgroundLoad(dest, spec)``: live traffic on a thread for a bake; ``now()``, ``records()``, ``stop()``.
- ``summarise(records, slo, ...)`` and ``tasks.loadtest.slo.evaluate / evaluate_by_deployment``.
- Prefect tasks ``run_loadtest`` and ``report_loadtest``; ``build_destination`` / ``build_spec`` validate input.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import SecretStr, ValidationError

from tasks.cli import InputError
from tasks.loadtest.client import BackgroundLoad, LoadRun, Progress, Destination, run_load
from tasks.loadtest.metrics import summarise
from tasks.loadtest.record import RequestRecord
from tasks.loadtest.report import write_report
from tasks.loadtest.spec import LoadSpec
from tasks.settings import Slo
from tasks.loadtest.slo import Verdict, evaluate, evaluate_by_deployment
from tasks.reports import run_logger

__all__ = [
    "BackgroundLoad", "LoadRun", "LoadSpec", "RequestRecord", "Destination", "Verdict", "build_spec", "build_destination",
    "evaluate", "evaluate_by_deployment", "report_loadtest", "run_info", "run_load", "run_loadtest", "summarise",
]


def build_destination(base_url: str, api_key_env: str | None = None, deployment: str | None = None,
                 ca_bundle: str | None = None, environ: dict[str, str] | None = None) -> Destination:
    """A ``Destination`` from user input; every problem is reported at once as an ``InputError``."""
    environ = os.environ if environ is None else environ
    problems = []
    parsed = urlparse(base_url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        problems.append(f"--base-url {base_url!r} must be an http(s) URL with a host")
    key = None
    if api_key_env:
        if not environ.get(api_key_env):
            problems.append(f"--api-key-env: environment variable {api_key_env} is not set or empty")
        else:
            key = SecretStr(environ[api_key_env])
    if ca_bundle and not Path(ca_bundle).is_file():
        problems.append(f"--ca-bundle {ca_bundle!r} is not a file")
    if problems:
        raise InputError("; ".join(problems))
    return Destination(base_url=base_url, auth=key, deployment=deployment or None, verify=ca_bundle or True)


def build_spec(**fields: Any) -> LoadSpec:
    """A validated ``LoadSpec`` (unset fields keep their defaults); problems become one ``InputError``."""
    try:
        return LoadSpec(**{k: v for k, v in fields.items() if v is not None})
    except ValidationError as err:
        problems = [f"{_flag(e['loc'])}{e['msg'].removeprefix('Value error, ')}"
                    for e in err.errors(include_input=False, include_url=False)]
        raise InputError("; ".join(problems)) from None


def _flag(loc: tuple) -> str:
    """``("duration_s",)`` -> ``"--duration: "``, as the CLI spells it; a whole-spec problem has none."""
    if not loc:
        return ""
    name = str(loc[0]).removesuffix("_s") if loc[0] in ("duration_s", "timeout_s") else str(loc[0])
    return "--" + name.replace("_", "-") + ": "


def run_info(dest: Destination, run: LoadRun) -> dict[str, Any]:
    """What was run, for the report header (no credentials)."""
    spec = run.spec
    if spec.open_loop:
        mode = f"open loop, {spec.arrival} {spec.rate:g} req/s" + (
            f" (burstiness {spec.burstiness:g})" if spec.arrival == "gamma" else "") + (
            f", cap {spec.max_concurrency}" if spec.max_concurrency else "")
    else:
        mode = f"closed loop, concurrency {spec.concurrency}"
    return {
        "started_at": run.started_at, "base_url": dest.base_url, "deployment": dest.deployment,
        "api": spec.api, "mode": mode, "requests": spec.requests, "duration_s": spec.duration_s,
        "warmup": spec.warmup, "stream": spec.stream, "max_tokens": spec.max_tokens,
        "ignore_eos": spec.ignore_eos,
        "prompts": f"synthetic ~{spec.prompt_tokens} tokens" if spec.prompt_tokens else "shipped set",
        "model": run.model, "seed": spec.seed, "elapsed_s": round(run.elapsed_s, 3),
    }


@task(name="load-test", cache_policy=NO_CACHE)
async def run_loadtest(dest: Destination, spec: LoadSpec) -> LoadRun:
    """Run the load with a progress line every 2 s (to the log, never stdout)."""
    log = run_logger("r1.loadtest")

    def progress(p: Progress, elapsed: float) -> None:
        log.info("load test: %d sent, %d done, %d failed, %.1f s", p.sent, p.done, p.failed, elapsed)

    return await run_load(dest, spec, progress=progress)


@task(name="load-test-report", cache_policy=NO_CACHE)
def report_loadtest(dest: Destination, run: LoadRun, slo: Slo | None, reports_dir: Path) -> dict[str, Any]:
    """Summarise, judge against ``slo`` and write the report; returns the summary with ``report_dir``."""
    summary = summarise(run.records, slo, open_loop=run.spec.open_loop, target_rate=run.spec.rate)
    info = run_info(dest, run)
    folder = write_report(run.records, summary, info, reports_dir)
    for warning in summary["warnings"]:
        run_logger("r1.loadtest").warning("load test: %s", warning)
    return {"run": info, **summary, "report_dir": str(folder)}
