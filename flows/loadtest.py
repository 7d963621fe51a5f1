"""Load-test any OpenAI-compatible server (an emulator endpoint, Azure, a bare vLLM) and judge the SLO.

    python -m flows.loadtest --base-url URL [--api-key-env VAR] [--deployment NAME]
        [--concurrency N | --rate R [--max-concurrency N] [--arrival poisson|constant|gamma] [--burstiness B]]
        [--requests N] [--duration S] [--warmup N] [--api chat|completions] [--stream | --no-stream]
        [--max-tokens N] [--ignore-eos] [--prompt-tokens N] [--model NAME] [--seed N] [--ca-bundle PEM]
        [--no-slo-gate] [--json]

Exit 0: the SLO passed (or --no-slo-gate and the run finished); 1: the SLO failed; 3: inconclusive
(too few requests to judge); 2: invalid input (stderr). SLO limits come from R1_SLO__* settings.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from typing import Any

from prefect import flow, get_run_logger

from tasks.cli import EXIT_FAILED, EXIT_OK, run_cli
from tasks.loadtest.run import LoadSpec, build_spec, build_destination, report_loadtest, run_loadtest
from tasks.prefect_home import print_run_url
from tasks.settings import load_settings

EXIT_INCONCLUSIVE = 3
DEFAULT_REQUESTS = 100


@flow(name="loadtest", log_prints=False)
async def loadtest(
    base_url: str,
    api_key_env: str | None = None,
    deployment: str | None = None,
    ca_bundle: str | None = None,
    load: LoadSpec | None = None,
) -> dict[str, Any]:
    """Send the load, write the report, judge the SLO. The key is read from ``api_key_env`` here,
    so it is never a flow parameter."""
    settings = load_settings()
    dest = build_destination(base_url, api_key_env, deployment, ca_bundle)
    load = load or LoadSpec(requests=DEFAULT_REQUESTS)
    run = await run_loadtest(dest, load)
    summary = report_loadtest(dest, run, settings.slo, settings.reports_dir)
    slo = summary["slo"]
    get_run_logger().info("load test done: %d ok, %d failed, SLO %s; report in %s", summary["requests_completed"],
                          summary["requests_failed"], slo["status"], summary["report_dir"])
    return summary


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m flows.loadtest", description=__doc__.splitlines()[0])
    p.add_argument("--base-url", required=True, help="server root; requests go to {base}/v1/...")
    p.add_argument("--api-key-env", help="name of the environment variable holding the key or token")
    p.add_argument("--deployment", help="aim at one deployment (azureml-model-deployment header)")
    p.add_argument("--ca-bundle", help="PEM file of the CA to trust (the emulator's)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--concurrency", type=int, help="closed loop: this many requests in flight (default 1)")
    mode.add_argument("--rate", type=float, help="open loop: requests per second on a precomputed schedule")
    p.add_argument("--max-concurrency", type=int, help="open loop: cap on requests in flight")
    p.add_argument("--arrival", choices=["poisson", "constant", "gamma"], help="open-loop arrivals (default poisson)")
    p.add_argument("--burstiness", type=float, help="gamma shape: <1 burstier, >1 smoother (default 1)")
    p.add_argument("--requests", type=int, help=f"measured requests (default {DEFAULT_REQUESTS} without --duration)")
    p.add_argument("--duration", type=float, help="stop sending after this many seconds")
    p.add_argument("--warmup", type=int, help="first requests excluded from metrics (default 0)")
    p.add_argument("--api", choices=["chat", "completions"], help="endpoint (default chat)")
    p.add_argument("--stream", action=argparse.BooleanOptionalAction, default=None, help="stream (default on)")
    p.add_argument("--max-tokens", type=int, help="max_tokens per request (default 256)")
    p.add_argument("--ignore-eos", action="store_true", default=None, help="fixed output length (vLLM)")
    p.add_argument("--prompt-tokens", type=int, help="synthetic prompts of about N tokens (default: shipped set)")
    p.add_argument("--temperature", type=float)
    p.add_argument("--model", help="model name to send (default: asked from {base}/v1/models)")
    p.add_argument("--seed", type=int, help="schedule and prompt seed (default 0)")
    p.add_argument("--timeout", type=float, help="per-request timeout in seconds (default 180)")
    p.add_argument("--no-slo-gate", action="store_true", help="exit 0 whatever the SLO verdict")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object on stdout")
    return p.parse_args(argv)


def spec_from_args(args: argparse.Namespace) -> LoadSpec:
    requests = args.requests
    if requests is None and args.duration is None:
        requests = DEFAULT_REQUESTS
    return build_spec(
        api=args.api, concurrency=args.concurrency, rate=args.rate, max_concurrency=args.max_concurrency,
        arrival=args.arrival, burstiness=args.burstiness, requests=requests, duration_s=args.duration,
        warmup=args.warmup, stream=args.stream, max_tokens=args.max_tokens, ignore_eos=args.ignore_eos,
        temperature=args.temperature, prompt_tokens=args.prompt_tokens, model=args.model, seed=args.seed,
        timeout_s=args.timeout,
    )


def text_summary(s: dict[str, Any]) -> str:
    def dist(name: str) -> str:
        d = s[name]
        keys = ("p50", "p90", "p95", "p99", "mean")
        return " ".join(f"{k}={d[k]:.1f}" if d[k] is not None else f"{k}=–" for k in keys)

    slo, conc = s["slo"], s["achieved_concurrency"]
    lines = [
        f"load test: {s['run']['mode']}, {s['requests_completed']} ok, {s['requests_failed']} failed "
        f"in {s['measurement_window_s']:.1f} s ({s['report_dir']})",
        *(f"  {name:<22} {dist(name)}" for name in ("ttft_ms", "ttfa_ms", "tpot_ms", "e2e_ms",
                                                      "e2e_from_intended_ms", "send_lag_ms")),
        f"  requests/s {s['requests_per_s']}  output tokens/s {s['output_tokens_per_s']}  achieved rate "
        f"{s['achieved_rate']}  concurrency mean/max {conc['mean']}/{conc['max']}",
        f"  SLO {slo['status'].upper()}: " + "; ".join(slo["reasons"]),
        *(f"  warning: {w}" for w in s["warnings"]),
    ]
    return "\n".join(lines)


def exit_code(summary: dict[str, Any], gate: bool) -> int:
    status = summary["slo"]["status"]
    if not gate or status == "pass":
        return EXIT_OK
    return EXIT_INCONCLUSIVE if status == "inconclusive" else EXIT_FAILED


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Invalid input fails here, before Prefect starts: exit 2 with the problems on stderr.
    load_settings()
    spec = spec_from_args(args)
    build_destination(args.base_url, args.api_key_env, args.deployment, args.ca_bundle)
    with contextlib.redirect_stdout(sys.stderr):  # stdout carries only the summary
        state = asyncio.run(loadtest(args.base_url, args.api_key_env, args.deployment, args.ca_bundle, spec,
                                     return_state=True))
    print_run_url(state.state_details.flow_run_id)
    summary = state.result()
    print(json.dumps(summary) if args.json else text_summary(summary))
    return exit_code(summary, gate=not args.no_slo_gate)


if __name__ == "__main__":
    run_cli(main)
