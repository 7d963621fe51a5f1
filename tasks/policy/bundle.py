"""The policy gate's input: one normalized "spec bundle", from our settings or from a user's files.

Both paths go through the same azure-ai-ml entities (ours from ``tasks.plan.specs``, a user's from the SDK's
own YAML loaders) and the same Dockerfile reading, so every rule judges both alike. The bundle also
carries what the container will actually run: the Dockerfile's command with the deployment's
environment variables substituted, and the vLLM arguments found in it.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from azure.ai.ml import load_online_deployment, load_online_endpoint
from azure.ai.ml.entities import Environment, ManagedOnlineDeployment, ManagedOnlineEndpoint

from tasks.plan.capacity import CapacityPlan, EngineShape, plan_capacity
from tasks.cli import InputError
from tasks.plan.model_arch import ModelArch, ModelConfigError, built_in_arch, load_arch
from tasks.settings import Settings, SettingsError
from tasks.plan.skus import find_sku
from tasks.plan.specs import RENDERED_DEPLOYMENT_NAME, build_deployment, build_endpoint, render_dockerfile

# What Azure ML does when a YAML leaves a field out (its online endpoint and deployment YAML reference).
AZURE_DEFAULT_AUTH_MODE = "key"
AZURE_DEFAULT_NETWORK_ACCESS = "enabled"
AZURE_DEFAULT_MAX_CONCURRENT = 1
AZURE_DEFAULT_TIMEOUT_MS = 5000
AZURE_DEFAULT_PROBE = {"initial_delay": 10, "period": 10, "failure_threshold": 30}
# What vLLM does when an argument is left out.
VLLM_DEFAULTS = {"max_num_seqs": 256, "gpu_memory_utilization": 0.9, "tensor_parallel_size": 1}
SHELLS = {"sh", "bash", "dash"}
VAR = re.compile(r"\$(?:\{(\w+)\}|(\w+))")


@dataclass(frozen=True)
class Dockerfile:
    """The final build stage, as far as the policy gate cares."""

    base_image: str | None = None
    user: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    build_args: dict[str, str] = field(default_factory=dict)
    command: str | None = None  # ENTRYPOINT (+ CMD), shell text


@dataclass(frozen=True)
class SpecBundle:
    endpoint_name: str
    auth_mode: str
    public_network_access: str
    egress_public_network_access: str
    region: str
    allowed_regions: list[str]
    key_rotation_days: int | None
    images: dict[str, str]  # where -> image reference ("deployment image", "Dockerfile FROM")
    dockerfile: Dockerfile
    deployment_env: dict[str, str]
    effective_env: dict[str, str]  # what the process sees: image ENV, then the deployment's variables
    args: list[str]  # the container command, variables substituted
    model_ref: str | None  # what --model points at
    data_collection: list[str]  # enabled data-collector collections
    app_insights_enabled: bool
    instance_type: str
    gpus: int
    shape: EngineShape
    capacity: CapacityPlan
    sources: dict[str, str]  # endpoint/deployment/dockerfile -> "settings" or a file path


def _logical_lines(text: str) -> list[str]:
    lines, current = [], ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        lines.append(current + stripped)
        current = ""
    if current:
        lines.append(current)
    return lines


def _key_values(rest: str) -> dict[str, str]:
    """``ENV A=1 B="x y"`` or the legacy ``ENV A 1``."""
    words = shlex.split(rest)
    if words and "=" not in words[0]:
        return {words[0]: " ".join(words[1:])}
    return dict(w.split("=", 1) if "=" in w else (w, "") for w in words)


def _exec_or_shell(rest: str) -> str:
    if rest.startswith("["):
        try:
            return shlex.join(json.loads(rest))
        except (json.JSONDecodeError, TypeError):
            pass
    return rest


def parse_dockerfile(text: str) -> Dockerfile:
    base = user = entrypoint = cmd = None
    env: dict[str, str] = {}
    build_args: dict[str, str] = {}
    for line in _logical_lines(text):
        instruction, _, rest = line.partition(" ")
        instruction, rest = instruction.upper(), rest.strip()
        if instruction == "FROM":  # a new stage: only the last one runs
            words = [w for w in rest.split() if not w.startswith("--")]
            base, user, entrypoint, cmd = (words[0] if words else None), None, None, None
            env, build_args = {}, {}
        elif instruction == "USER":
            user = rest
        elif instruction == "ENV":
            env.update(_key_values(rest))
        elif instruction == "ARG":
            build_args.update(_key_values(rest))
        elif instruction == "ENTRYPOINT":
            entrypoint = _exec_or_shell(rest)
        elif instruction == "CMD":
            cmd = _exec_or_shell(rest)
    command = " ".join(c for c in (entrypoint, cmd) if c) or None
    return Dockerfile(base, user, env, build_args, command)


def expand_command(command: str | None, env: dict[str, str]) -> list[str]:
    """Shell-form expansion: ``"$MODEL_PATH"`` stays one word, a bare ``$VLLM_ARGS`` splits."""
    if not command:
        return []
    expanded = VAR.sub(lambda m: env.get(m.group(1) or m.group(2), ""), command)
    try:
        args = shlex.split(expanded)
        if len(args) > 2 and Path(args[0]).name in SHELLS and args[1] == "-c":  # ["sh", "-c", "..."]
            return args[:2] + shlex.split(args[2]) + args[3:]
        return args
    except ValueError as err:
        raise InputError(f"cannot parse the container command {command!r}: {err}") from None


def flag_values(args: list[str]) -> dict[str, str | None]:
    """``--name value`` / ``--name=value`` / bare ``--flag`` (value None); the last one wins."""
    flags: dict[str, str | None] = {}
    for i, arg in enumerate(args):
        if not arg.startswith("-"):
            continue
        name, eq, value = arg.partition("=")
        if eq:
            flags[name] = value
        elif i + 1 < len(args) and not args[i + 1].startswith("-"):
            flags[name] = args[i + 1]
        else:
            flags[name] = None
    return flags


def model_reference(args: list[str], flags: dict[str, str | None]) -> str | None:
    if flags.get("--model"):
        return flags["--model"]
    if "serve" in args:  # `vllm serve <model>`
        rest = args[args.index("serve") + 1 :]
        return rest[0] if rest and not rest[0].startswith("-") else None
    return None


def _number(flags: dict[str, str | None], name: str, kind: type, default, where: str):
    value = flags.get(name)
    if value is None and name == "--tensor-parallel-size":
        value = flags.get("-tp")
    if value is None:
        return default
    try:
        return kind(value)
    except ValueError:
        raise InputError(f"{where}: {name} {value!r} is not a {kind.__name__}") from None


def engine_shape(flags: dict[str, str | None], deployment: ManagedOnlineDeployment, where: str) -> EngineShape:
    rs = deployment.request_settings
    return EngineShape(
        max_num_seqs=_number(flags, "--max-num-seqs", int, VLLM_DEFAULTS["max_num_seqs"], where),
        max_model_len=_number(flags, "--max-model-len", int, None, where),
        gpu_memory_utilization=_number(
            flags, "--gpu-memory-utilization", float, VLLM_DEFAULTS["gpu_memory_utilization"], where
        ),
        tensor_parallel_size=_number(
            flags, "--tensor-parallel-size", int, VLLM_DEFAULTS["tensor_parallel_size"], where
        ),
        max_concurrent_requests_per_instance=(rs and rs.max_concurrent_requests_per_instance)
        or AZURE_DEFAULT_MAX_CONCURRENT,
        request_timeout_ms=(rs and rs.request_timeout_ms) or AZURE_DEFAULT_TIMEOUT_MS,
        readiness_window_s=_probe_window(deployment.readiness_probe),
        liveness_window_s=_probe_window(deployment.liveness_probe),
    )


def _probe_window(probe) -> int:
    def get(name: str) -> int:
        value = getattr(probe, name, None) if probe is not None else None
        return AZURE_DEFAULT_PROBE[name] if value is None else value

    return get("initial_delay") + get("period") * get("failure_threshold")


def model_arch(settings: Settings) -> ModelArch:
    if settings.model_config_path:
        try:
            return load_arch(settings.model_config_path)
        except ModelConfigError as err:
            raise SettingsError([f"R1_MODEL_CONFIG_PATH: {err}"]) from None
    arch = built_in_arch(settings.model_id)
    if arch is None:
        raise SettingsError(
            [f"R1_MODEL_CONFIG_PATH: no built-in architecture for R1_MODEL_ID={settings.model_id!r}; "
             "point R1_MODEL_CONFIG_PATH at the model's config.json"]
        )
    return arch


def _enabled_collections(deployment: ManagedOnlineDeployment) -> list[str]:
    collector = deployment.data_collector
    if not collector or not collector.collections:
        return []
    return sorted(
        name for name, c in collector.collections.items() if str(c.enabled).strip().lower() == "true"
    )


def build_bundle(
    settings: Settings,
    endpoint: ManagedOnlineEndpoint,
    deployment: ManagedOnlineDeployment,
    dockerfile_text: str,
    sources: dict[str, str],
) -> SpecBundle:
    dockerfile = parse_dockerfile(dockerfile_text)
    deployment_env = {k: str(v) for k, v in (deployment.environment_variables or {}).items()}
    effective = {**dockerfile.env, **deployment_env}
    args = expand_command(dockerfile.command, effective)
    flags = flag_values(args)
    images = {"Dockerfile FROM": dockerfile.base_image} if dockerfile.base_image else {}
    if isinstance(deployment.environment, Environment) and deployment.environment.image:
        images["deployment image"] = deployment.environment.image
    sku = find_sku(deployment.instance_type or "")
    if sku is None:
        raise InputError(
            f"{sources['deployment']}: instance_type {deployment.instance_type!r} is not a known GPU SKU"
        )
    shape = engine_shape(flags, deployment, sources["deployment"])
    capacity = plan_capacity(model_arch(settings), sku, shape, settings.workload, settings.slo.ttft_p95_ms)
    return SpecBundle(
        endpoint_name=endpoint.name,
        auth_mode=endpoint.auth_mode or AZURE_DEFAULT_AUTH_MODE,
        public_network_access=endpoint.public_network_access or AZURE_DEFAULT_NETWORK_ACCESS,
        egress_public_network_access=deployment.egress_public_network_access or AZURE_DEFAULT_NETWORK_ACCESS,
        region=(endpoint.location or settings.region).lower(),
        allowed_regions=settings.allowed_regions,
        key_rotation_days=settings.key_rotation_days,
        images=images,
        dockerfile=dockerfile,
        deployment_env=deployment_env,
        effective_env=effective,
        args=args,
        model_ref=model_reference(args, flags),
        data_collection=_enabled_collections(deployment),
        app_insights_enabled=bool(deployment.app_insights_enabled),
        instance_type=sku.name,
        gpus=sku.gpus,
        shape=shape,
        capacity=capacity,
        sources=sources,
    )


def _flatten(errors, prefix: str = "") -> list[str]:
    if isinstance(errors, dict):
        return [line for key, sub in errors.items() for line in _flatten(sub, f"{prefix}{key}.")]
    messages = errors if isinstance(errors, list) else [errors]
    return [f"{prefix.rstrip('.')}: {m}" if prefix else str(m) for m in messages]


def describe_load_error(err: Exception) -> str:
    """The SDK's schema errors embed a JSON object of field -> messages: one ``field: message`` each."""
    text = str(err).strip()
    start = text.find("{")
    if start >= 0:
        try:
            errors, _ = json.JSONDecoder().raw_decode(text[start:])
            return "; ".join(_flatten(errors))
        except json.JSONDecodeError:
            pass
    return text.splitlines()[0] if text else type(err).__name__


def _load(loader, path: Path):
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        return loader(path)
    except Exception as err:  # marshmallow / SDK validation / YAML errors: bad input, exit 2
        raise InputError(f"{path}: not a valid Azure ML spec: {describe_load_error(err)}") from None


def bundle_from_files(
    settings: Settings,
    endpoint_yaml: Path | None = None,
    deployment_yaml: Path | None = None,
    dockerfile: Path | None = None,
) -> SpecBundle:
    """Our rendered specs; on the migration path a user's own files replace the matching ones.
    ``R1_DOCKERFILE`` is such a file too: the one the image build would build."""
    dockerfile = dockerfile or settings.dockerfile
    sources = {
        "endpoint": str(endpoint_yaml) if endpoint_yaml else "settings",
        "deployment": str(deployment_yaml) if deployment_yaml else "settings",
        "dockerfile": str(dockerfile) if dockerfile else "settings",
    }
    endpoint = _load(load_online_endpoint, endpoint_yaml) if endpoint_yaml else build_endpoint(settings)
    deployment = (
        _load(load_online_deployment, deployment_yaml)
        if deployment_yaml
        else build_deployment(settings, RENDERED_DEPLOYMENT_NAME)
    )
    if not isinstance(deployment, ManagedOnlineDeployment):
        raise InputError(f"{deployment_yaml}: not a managed online deployment")
    if dockerfile:
        if not dockerfile.is_file():
            raise InputError(f"{dockerfile}: no such file")
        text = dockerfile.read_text()
    else:
        text = render_dockerfile(settings)
    return build_bundle(settings, endpoint, deployment, text, sources)
