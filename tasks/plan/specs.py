"""The single source of truth for what is sent to Azure ML, and for the files that describe it.

``build_endpoint`` / ``build_deployment`` return the azure-ai-ml entities the rollout sends;
``rendered_files`` turns the same entities into ``deployments/*.yml`` (the SDK's own ``_to_dict``
view) plus ``docker/Dockerfile``, so the YAML a reviewer reads and the SDK calls cannot drift.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import yaml
from azure.ai.ml.entities import (
    Environment,
    ManagedOnlineDeployment,
    ManagedOnlineEndpoint,
    OnlineRequestSettings,
    ProbeSettings,
)

from tasks.settings import REPO_ROOT, Probe, Settings

INFERENCE_PORT = 8000
HEALTH_PATH = "/health"
SCORING_PATH = "/"
ENVIRONMENT_NAME = "r1-vllm"
RENDERED_DEPLOYMENT_NAME = "blue"  # deployments/deployment.yml; the rollout picks blue or green itself
BAKED_MODEL_PATH = "/opt/models/r1"  # where docker/Dockerfile COPYs the weights for baked-in-image
CONTAINER_UID = 10001
DOCKERFILE = "docker/Dockerfile"
ENVIRONMENT_YML = "deployments/environment.yml"
ENDPOINT_YML = "deployments/endpoint.yml"
DEPLOYMENT_YML = "deployments/deployment.yml"
SCHEMAS = {
    ENVIRONMENT_YML: "https://azuremlschemas.azureedge.net/latest/environment.schema.json",
    ENDPOINT_YML: "https://azuremlschemas.azureedge.net/latest/managedOnlineEndpoint.schema.json",
    DEPLOYMENT_YML: "https://azuremlschemas.azureedge.net/latest/managedOnlineDeployment.schema.json",
}
# Baked into the image: no hub calls, no usage statistics, no telemetry (vLLM and Hugging Face).
IMAGE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
    "HOME": "/home/vllm",
}
ENTRYPOINT = (
    'python3 -m vllm.entrypoints.openai.api_server --model "$MODEL_PATH" '
    f'--served-model-name "$MODEL_NAME" --host 0.0.0.0 --port {INFERENCE_PORT} $VLLM_ARGS'
)


def model_path(settings: Settings) -> str:
    """What the entrypoint passes to ``--model``: a local path, except for hub-at-start (flagged)."""
    return {
        "registered-asset": settings.model_mount_path,
        "baked-in-image": BAKED_MODEL_PATH,
        "hub-at-start": settings.model_id,
    }[settings.model_supply]


def vllm_args(settings: Settings) -> str:
    extra = ["--revision", settings.model_revision] if settings.model_supply == "hub-at-start" else []
    return shlex.join(settings.vllm.to_cli() + extra)


def deployment_environment_variables(settings: Settings) -> dict[str, str]:
    """User variables plus the three the entrypoint reads (settings reject user values for those)."""
    env = dict(settings.environment_variables)
    if settings.model_supply == "hub-at-start":
        env["HF_HUB_OFFLINE"] = "0"  # a download at start cannot work offline; the gate flags both
    env.update(MODEL_NAME=settings.model_id, MODEL_PATH=model_path(settings), VLLM_ARGS=vllm_args(settings))
    return env


def inference_config() -> dict[str, dict[str, Any]]:
    route = {"port": INFERENCE_PORT, "path": HEALTH_PATH}
    return {
        "liveness_route": dict(route),
        "readiness_route": dict(route),
        "scoring_route": {"port": INFERENCE_PORT, "path": SCORING_PATH},
    }


# With R1_IMAGE empty the image is what the build makes: no digest exists until then.
BUILT_IMAGE_NOTE = ("# image: empty here; `python -m flows.build_image` (or the rollout) builds docker/ with ACR Tasks\n"
                    "# and registers the r1-vllm environment pinned to the digest the build reported.\n")


def build_environment(settings: Settings, image: str | None = None, name: str | None = None) -> Environment:
    """Inline (anonymous) when unnamed, as a deployment sends it; named for environment.yml."""
    return Environment(name=name, image=image or settings.image, inference_config=inference_config())


def build_endpoint(settings: Settings) -> ManagedOnlineEndpoint:
    return ManagedOnlineEndpoint(
        name=settings.endpoint_name,
        auth_mode=settings.auth_mode,
        public_network_access=settings.public_network_access,
        description=f"{settings.model_id} served by vLLM",
        tags={"managed-by": "r1-rollout"},
    )


def _probe(probe: Probe) -> ProbeSettings:
    return ProbeSettings(
        initial_delay=probe.initial_delay,
        period=probe.period,
        timeout=probe.timeout,
        success_threshold=probe.success_threshold,
        failure_threshold=probe.failure_threshold,
    )


def build_deployment(
    settings: Settings, deployment_name: str, image: str | None = None
) -> ManagedOnlineDeployment:
    registered = settings.model_supply == "registered-asset"
    return ManagedOnlineDeployment(
        name=deployment_name,
        endpoint_name=settings.endpoint_name,
        environment=build_environment(settings, image),
        # A name:version string resolves to an ARM id locally: no model GET/PUT (docs/plan.md).
        model=f"azureml:{settings.model_asset}" if registered else None,
        model_mount_path=settings.model_mount_path if registered else None,
        environment_variables=deployment_environment_variables(settings),
        instance_type=settings.instance_type,
        instance_count=settings.instance_count,
        request_settings=OnlineRequestSettings(
            max_concurrent_requests_per_instance=settings.max_concurrent_requests_per_instance,
            request_timeout_ms=settings.request_timeout_ms,
        ),
        liveness_probe=_probe(settings.probes.liveness),
        readiness_probe=_probe(settings.probes.readiness),
        egress_public_network_access=settings.egress_public_network_access,
        app_insights_enabled=settings.app_insights_enabled,
        tags={
            "model_id": settings.model_id,
            "model_revision": settings.model_revision,
            "model_supply": settings.model_supply,
        },
    )


def render_dockerfile(settings: Settings) -> str:
    env = " \\\n    ".join(f"{k}={v}" for k, v in IMAGE_ENV.items())
    home = IMAGE_ENV["HOME"]
    copy_model = (
        f"# The weights ship inside the image (R1_MODEL_SUPPLY=baked-in-image): put them in docker/model/.\n"
        f"COPY --chown={CONTAINER_UID}:{CONTAINER_UID} model/ {BAKED_MODEL_PATH}/\n"
        if settings.model_supply == "baked-in-image"
        else ""
    )
    return (
        "# Rendered from settings by tasks/plan/specs.py (python -m flows.plan); do not edit by hand.\n"
        f"FROM {settings.base_image}\n"
        f"ENV {env}\n"
        f"RUN useradd --uid {CONTAINER_UID} --create-home --home-dir {home} vllm \\\n"
        f"    && mkdir -p {home}/.config/vllm && touch {home}/.config/vllm/do_not_track \\\n"
        f"    && chown -R {CONTAINER_UID}:{CONTAINER_UID} {home}\n"
        f"{copy_model}"
        f"USER {CONTAINER_UID}:{CONTAINER_UID}\n"
        f"EXPOSE {INFERENCE_PORT}\n"
        "# MODEL_NAME, MODEL_PATH and VLLM_ARGS come from the deployment's environment variables.\n"
        f"ENTRYPOINT {ENTRYPOINT}\n"
    )


def entity_dict(entity: Environment | ManagedOnlineEndpoint | ManagedOnlineDeployment) -> dict[str, Any]:
    """The SDK's own YAML view of an entity, as plain data, without empty sections."""
    data = json.loads(json.dumps(entity._to_dict()))
    return {k: v for k, v in data.items() if v not in ({}, None, [])}


def deployment_dict(deployment: ManagedOnlineDeployment) -> dict[str, Any]:
    data = entity_dict(deployment)
    env = data["environment"]  # inline: the SDK registers it anonymously, name and version are its hash
    data["environment"] = {"image": env["image"], "inference_config": env["inference_config"]}
    return data


def to_yaml(schema: str, data: dict[str, Any]) -> str:
    return yaml.safe_dump({"$schema": schema, **data}, sort_keys=False, width=120)


def rendered_files(settings: Settings) -> dict[str, str]:
    """Repository-relative path -> content, for the given settings (pure)."""
    environment = build_environment(settings, name=ENVIRONMENT_NAME)
    note = "" if settings.image else BUILT_IMAGE_NOTE
    return {
        DOCKERFILE: render_dockerfile(settings),
        ENVIRONMENT_YML: note + to_yaml(SCHEMAS[ENVIRONMENT_YML], entity_dict(environment)),
        ENDPOINT_YML: to_yaml(SCHEMAS[ENDPOINT_YML], entity_dict(build_endpoint(settings))),
        DEPLOYMENT_YML: note + to_yaml(
            SCHEMAS[DEPLOYMENT_YML], deployment_dict(build_deployment(settings, RENDERED_DEPLOYMENT_NAME))
        ),
    }


def render_all(settings: Settings, out_dir: Path = REPO_ROOT) -> dict[str, Path]:
    """Write docker/Dockerfile and deployments/*.yml under ``out_dir``; return what was written."""
    written = {}
    for rel, text in rendered_files(settings).items():
        path = Path(out_dir) / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written[rel] = path
    return written
