"""``python -m emulator [--state-dir DIR] [--port 0] [--location L] [--realistic] [--detach]``,
``python -m emulator stop --state-dir DIR`` and
``python -m emulator principal add --state-dir DIR --role Reader [--scope ID]``. See docs/emulator.md."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from pathlib import Path

from emulator import process, rules
from emulator.faults import Faults
from emulator.server import FAULTS_ENV, QUOTA_ENV, Options, serve

DEFAULT_STATE_DIR = Path(__file__).resolve().parent.parent / ".r1" / "emulator"


def _run_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m emulator", description="Local Azure ML emulator.",
                                epilog="Stop a running one: python -m emulator stop --state-dir DIR")
    p.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
    p.add_argument("--port", type=int, default=0, help="ARM listener port (0: previous or any free)")
    p.add_argument("--gateway-port", type=int, default=0, help="scoring gateway port (0: previous or any free)")
    p.add_argument("--location", default="swedencentral")
    p.add_argument("--realistic", action="store_true", help="pace LROs and provisioning like Azure, for demos")
    p.add_argument("--gpu-quota-cores", type=int,
                   default=os.environ.get(QUOTA_ENV, str(rules.DEFAULT_GPU_QUOTA_CORES)),
                   help=f"regional GPU core quota (env {QUOTA_ENV}; default: two single-A100 deployments)")
    p.add_argument("--subscription-id", default="00000000-0000-0000-0000-000000000000")
    p.add_argument("--resource-group", default="rg-r1")
    p.add_argument("--workspace", default="ws-r1")
    p.add_argument("--autoscale-interval", type=float, default=15.0,
                   help="seconds between autoscale evaluations (metrics sampled each time)")
    p.add_argument("--detach", action="store_true", help="start in the background; return when ready")
    return p


def _principal(argv: list[str]) -> int:
    """``principal add --role R [--scope S]``: a new principal of the state dir's tenant (see emulator/identity.py)."""
    from emulator import identity
    from emulator.layout import StateDir

    p = argparse.ArgumentParser(prog="python -m emulator principal add",
                                description="Add a principal with one role assignment; prints its ids as JSON. "
                                            "Its client secret is written to DIR/secrets/clients/<client_id> (0600).")
    p.add_argument("verb", choices=["add"])
    p.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
    p.add_argument("--role", required=True, choices=sorted(identity.ROLE_DEFINITIONS))
    p.add_argument("--scope", help="where the role applies, an ARM id (default: the resource group in "
                                    "connection.json, else /subscriptions/<default>/resourceGroups/rg-r1)")
    p.add_argument("--name", default="")
    args = p.parse_args(argv)
    state = StateDir(args.state_dir.resolve())
    if args.scope is None:
        conn = process.connection(state) or {}
        args.scope = (f"/subscriptions/{conn.get('subscription_id', '00000000-0000-0000-0000-000000000000')}"
                      f"/resourceGroups/{conn.get('resource_group', 'rg-r1')}")
    try:
        principal, secret_file = identity.add_principal(state, args.role, args.scope, args.name)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps({"tenant_id": json.loads(state.identity.read_text())["tenant_id"],
                      "client_id": principal.client_id, "object_id": principal.object_id, "role": args.role,
                      "scope": args.scope, "secret_file": str(secret_file)}, indent=2))
    return 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["principal"]:
        return _principal(argv[1:])
    if argv[:1] == ["stop"]:
        p = argparse.ArgumentParser(prog="python -m emulator stop")
        p.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
        args = p.parse_args(argv[1:])
        stopped = process.stop(args.state_dir)
        print("stopped" if stopped else f"no emulator running on {args.state_dir}", file=sys.stderr)
        return 0
    args = _run_parser().parse_args(argv)
    if args.gpu_quota_cores < 0:
        print("error: --gpu-quota-cores must not be negative", file=sys.stderr)
        return 2
    if not 0.1 <= args.autoscale_interval <= 3600:
        print("error: --autoscale-interval must be within 0.1-3600 seconds", file=sys.stderr)
        return 2
    try:
        Faults.model_validate_json(os.environ.get(FAULTS_ENV) or "{}")
    except ValueError as err:
        print(f"error: {FAULTS_ENV} is not a valid faults object: {err}", file=sys.stderr)
        return 2
    if args.detach:
        try:
            conn = process.start_detached(args.state_dir, _forwarded(args))
        except process.EmulatorError as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        print(json.dumps(conn, indent=2))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per probe is noise
    opts = Options(
        state_dir=args.state_dir, port=args.port, gateway_port=args.gateway_port,
        location=args.location.lower(), realistic=args.realistic, gpu_quota_cores=args.gpu_quota_cores,
        subscription_id=args.subscription_id, resource_group=args.resource_group, workspace=args.workspace,
        autoscale_interval=args.autoscale_interval,
    )
    try:
        asyncio.run(serve(opts))
    except process.EmulatorError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except OSError as err:
        print(f"error: cannot listen: {err}", file=sys.stderr)
        return 1
    return 0


def _forwarded(args: argparse.Namespace) -> list[str]:
    """The foreground command line for a detached start (the state dir is passed resolved)."""
    flags = ["--port", str(args.port), "--gateway-port", str(args.gateway_port), "--location", args.location,
             "--gpu-quota-cores", str(args.gpu_quota_cores), "--subscription-id", args.subscription_id,
             "--resource-group", args.resource_group, "--workspace", args.workspace,
             "--autoscale-interval", str(args.autoscale_interval)]
    return flags + (["--realistic"] if args.realistic else [])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
