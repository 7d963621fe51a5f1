"""Specs: one set of SDK entities behind both the rendered YAML/Dockerfile and what the rollout sends."""

from __future__ import annotations

import dataclasses
import shlex

import pytest
from azure.ai.ml import load_environment, load_online_deployment, load_online_endpoint
from azure.ai.ml.entities import ManagedOnlineDeployment

from tasks.policy.bundle import bundle_from_files, parse_dockerfile
from tasks.settings import REPO_ROOT, load_settings
from tasks.plan.specs import (
    BAKED_MODEL_PATH,
    DEPLOYMENT_YML,
    DOCKERFILE,
    ENDPOINT_YML,
    ENTRYPOINT,
    ENVIRONMENT_YML,
    build_deployment,
    build_endpoint,
    deployment_dict,
    inference_config,
    render_all,
    rendered_files,
)

PINNED = "r1acr.azurecr.io/r1-vllm@sha256:" + "cd" * 32


def test_committed_specs_are_the_rendering_of_default_settings():
    """If this fails: python -m flows.plan --render-to . (and commit docker/ and deployments/)."""
    for rel, text in rendered_files(load_settings()).items():
        assert (REPO_ROOT / rel).read_text() == text, f"{rel} is stale"


def deployment_view(d: ManagedOnlineDeployment) -> dict:
    """The SDK's own YAML view; the loader strips the `azureml:` prefix the entity keeps."""
    view = deployment_dict(d)
    if "model" in view:
        view["model"] = view["model"].removeprefix("azureml:")
    return view


@pytest.mark.parametrize("supply", ["registered-asset", "baked-in-image", "hub-at-start"])
def test_rendered_yaml_loads_with_the_sdk_and_equals_the_built_entities(tmp_path, supply):
    settings = load_settings(model_supply=supply, auth_mode="key", key_rotation_days=30,
                             environment_variables={"TOKENIZERS_PARALLELISM": "false"})
    written = render_all(settings, tmp_path)
    assert set(written) == {DOCKERFILE, ENVIRONMENT_YML, ENDPOINT_YML, DEPLOYMENT_YML}

    endpoint, built_ep = load_online_endpoint(written[ENDPOINT_YML]), build_endpoint(settings)
    assert (endpoint.name, endpoint.auth_mode, endpoint.public_network_access, endpoint.tags) == (
        built_ep.name, built_ep.auth_mode, built_ep.public_network_access, built_ep.tags) == (
        "r1-prod", "key", "disabled", {"managed-by": "r1-rollout"})

    loaded = load_online_deployment(written[DEPLOYMENT_YML])
    assert deployment_view(loaded) == deployment_view(build_deployment(settings, "blue"))

    environment = load_environment(written[ENVIRONMENT_YML])
    assert (environment.name, environment.image) == ("r1-vllm", settings.image)

    # The policy gate sees the same thing whether it reads our files or our entities.
    from_files = bundle_from_files(settings, written[ENDPOINT_YML], written[DEPLOYMENT_YML], written[DOCKERFILE])
    assert dataclasses.replace(from_files, sources={}) == dataclasses.replace(bundle_from_files(settings), sources={})


def test_deployment_carries_the_planned_settings():
    settings = load_settings(instance_count=2, request_timeout_ms=120_000)
    d = build_deployment(settings, "green", image=PINNED)
    assert (d.name, d.endpoint_name, d.environment.image) == ("green", "r1-prod", PINNED)
    assert d.environment.inference_config == inference_config()
    assert d.instance_count == 2 and d.request_settings.request_timeout_ms == 120_000
    assert d.request_settings.max_concurrent_requests_per_instance == settings.vllm.max_num_seqs
    assert (d.readiness_probe.initial_delay, d.readiness_probe.failure_threshold) == (60, 90)
    assert d.egress_public_network_access == "disabled" and d.app_insights_enabled is False
    assert build_deployment(settings, "blue").environment.image == settings.image


def test_registered_asset_is_mounted_and_served_from_the_mount():
    settings = load_settings()
    d = build_deployment(settings, "blue")
    assert d.model == "azureml:deepseek-r1-distill-llama-8b:1"
    assert d.model_mount_path == "/var/azureml-app/models/r1"
    assert d.environment_variables == {
        "MODEL_NAME": "deepseek-ai/DeepSeek-R1-Distill-Llama-8B",
        "MODEL_PATH": "/var/azureml-app/models/r1",
        "VLLM_ARGS": settings.vllm.to_env_value(),
    }


def test_baked_in_image_copies_weights_and_needs_no_asset():
    settings = load_settings(model_supply="baked-in-image")
    d = build_deployment(settings, "blue")
    assert d.model is None and d.model_mount_path is None
    assert d.environment_variables["MODEL_PATH"] == BAKED_MODEL_PATH
    assert f"COPY --chown=10001:10001 model/ {BAKED_MODEL_PATH}/" in rendered_files(settings)[DOCKERFILE]


def test_hub_at_start_is_rendered_honestly():
    """It needs the hub online and a pinned revision; the gate then flags it."""
    settings = load_settings(model_supply="hub-at-start", model_revision="abc123")
    env = build_deployment(settings, "blue").environment_variables
    assert env["MODEL_PATH"] == settings.model_id and env["HF_HUB_OFFLINE"] == "0"
    assert shlex.split(env["VLLM_ARGS"])[-2:] == ["--revision", "abc123"]


def test_user_variables_are_passed_alongside_the_derived_ones():
    env = build_deployment(load_settings(environment_variables={"NCCL_DEBUG": "WARN"}), "b1").environment_variables
    assert env["NCCL_DEBUG"] == "WARN" and set(env) == {"NCCL_DEBUG", "MODEL_NAME", "MODEL_PATH", "VLLM_ARGS"}


def test_dockerfile_is_hardened():
    settings = load_settings()
    text = rendered_files(settings)[DOCKERFILE]
    d = parse_dockerfile(text)
    assert d.base_image == settings.base_image and "@sha256:" in d.base_image
    assert d.user == "10001:10001"
    assert {"HF_HUB_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1",
            "HF_HUB_DISABLE_TELEMETRY": "1"}.items() <= d.env.items()
    for forbidden in ("VLLM_SERVER_DEV_MODE", "VLLM_ALLOW_RUNTIME_LORA_UPDATING", "--trust-remote-code",
                      "--enable-lora", "HF_TOKEN"):
        assert forbidden not in text
    assert d.command == ENTRYPOINT == (
        'python3 -m vllm.entrypoints.openai.api_server --model "$MODEL_PATH" --served-model-name "$MODEL_NAME" '
        "--host 0.0.0.0 --port 8000 $VLLM_ARGS"
    )


def test_base_image_setting_is_the_from_line():
    base = "myacr.azurecr.io/mirror/vllm-openai@sha256:" + "ef" * 32
    assert f"FROM {base}\n" in rendered_files(load_settings(base_image=base))[DOCKERFILE]


def test_model_version_string_resolves_without_arm_calls():
    """azure-ai-ml turns `azureml:<name>:<version>` into an ARM id locally (no model GET/PUT); a label
    (`@latest`) would make it list model versions, which is why settings refuse labels."""
    from azure.ai.ml._scope_dependent_operations import OperationConfig, OperationScope
    from azure.ai.ml.operations._operation_orchestrator import OperationOrchestrator

    class NoOperations:
        @property
        def all_operations(self):
            raise AssertionError("the SDK wanted to call the model operations")

    orchestrator = OperationOrchestrator(
        operation_container=NoOperations(),
        operation_scope=OperationScope("sub", "rg", "ws"),
        operation_config=OperationConfig(show_progress=False, enable_telemetry=False),
    )
    model = build_deployment(load_settings(), "blue").model
    assert orchestrator.get_asset_arm_id(model, azureml_type="models") == (
        "/subscriptions/sub/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/ws/"
        "models/deepseek-r1-distill-llama-8b/versions/1"
    )
    with pytest.raises(AssertionError, match="model operations"):
        orchestrator.get_asset_arm_id("azureml:deepseek-r1-distill-llama-8b@latest", azureml_type="models")
