"""The security policy gate's rules: data (id, category, severity, why, how to fix) plus a pure check.

A check takes a ``SpecBundle`` and returns one message per violation (empty: the rule is quiet).
Messages name variables and files, never a secret's value. ``docs/plan.md`` lists the table.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from tasks.policy.bundle import SpecBundle, flag_values
from tasks.settings import MAX_REQUEST_TIMEOUT_MS

Category = Literal[
    "network", "auth", "image", "model-supply", "telemetry", "secrets", "region", "capacity",
    "runtime-hardening",
]
Severity = Literal["error", "warning"]

DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
SECRET_NAME = re.compile(r"^(HF_TOKEN|HUGGING_FACE_HUB_TOKEN|.*_(KEY|SECRET|PASSWORD|TOKEN))$", re.IGNORECASE)
# Settings that only say *whether* a secret is used, not the secret itself.
NOT_SECRET_VALUES = {"", "0", "1", "true", "false"}
SECRET_FLAGS = ("--api-key", "--hf-token")  # vLLM arguments that take a credential
REQUEST_LOGGING_FLAGS = ("--enable-log-requests", "--enable-log-outputs")
REQUEST_LOGGING_ENV = ("VLLM_DEBUG_LOG_API_SERVER_RESPONSE",)


@dataclass(frozen=True)
class Rule:
    id: str
    category: Category
    severity: Severity
    rationale: str
    remediation: str
    check: Callable[[SpecBundle], list[str]]


def truthy(value: str | None) -> bool:
    return value is not None and value.strip().lower() in {"1", "true", "yes", "on"}


def _image_tag(image: str) -> str | None:
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else None


def _registry(image: str) -> str:
    first = image.split("/", 1)[0]
    return first if "/" in image and ("." in first or ":" in first or first == "localhost") else "docker.io"


def not_digest_pinned(b: SpecBundle) -> list[str]:
    return [f"{where} {image!r} is not pinned by @sha256 digest" for where, image in b.images.items()
            if not DIGEST.search(image)]


def latest_tag(b: SpecBundle) -> list[str]:
    return [f"{where} {image!r} {'uses' if _image_tag(image) else 'has no tag, i.e.'} the moving 'latest' tag"
            for where, image in b.images.items()
            if not DIGEST.search(image) and _image_tag(image) in (None, "latest")]


def public_registry(b: SpecBundle) -> list[str]:
    image = b.images.get("deployment image")
    if image and not _registry(image).endswith(".azurecr.io"):
        return [f"deployment image {image!r} is served from {_registry(image)}, not an Azure Container Registry"]
    return []


def runs_as_root(b: SpecBundle) -> list[str]:
    user = b.dockerfile.user
    if user is None:
        return [f"Dockerfile ({b.sources['dockerfile']}) has no USER: the container runs as root"]
    if user.split(":", 1)[0] in ("root", "0"):
        return [f"Dockerfile ({b.sources['dockerfile']}) sets USER {user}"]
    return []


def endpoint_public(b: SpecBundle) -> list[str]:
    if b.public_network_access != "disabled":
        return [f"endpoint {b.endpoint_name!r} public_network_access is {b.public_network_access}"]
    return []


def egress_open(b: SpecBundle) -> list[str]:
    if b.egress_public_network_access != "disabled":
        return [f"deployment egress_public_network_access is {b.egress_public_network_access}"]
    return []


def hub_at_start(b: SpecBundle) -> list[str]:
    if b.model_ref is not None and not b.model_ref.startswith("/"):
        return [f"the container serves --model {b.model_ref!r}, a hub id downloaded at start, not a local path"]
    return []


def hub_online(b: SpecBundle) -> list[str]:
    if not truthy(b.effective_env.get("HF_HUB_OFFLINE")):
        return [f"HF_HUB_OFFLINE is {b.effective_env.get('HF_HUB_OFFLINE', 'unset')}: the container may call the hub"]
    return []


def remote_code(b: SpecBundle) -> list[str]:
    return ["vLLM runs with --trust-remote-code"] if "--trust-remote-code" in b.args else []


def vllm_telemetry(b: SpecBundle) -> list[str]:
    env = b.effective_env
    if not (truthy(env.get("VLLM_NO_USAGE_STATS")) or truthy(env.get("DO_NOT_TRACK"))):
        return ["neither VLLM_NO_USAGE_STATS=1 nor DO_NOT_TRACK=1 is set: vLLM reports usage statistics"]
    return []


def hf_telemetry(b: SpecBundle) -> list[str]:
    env = b.effective_env
    if not (truthy(env.get("HF_HUB_DISABLE_TELEMETRY")) or truthy(env.get("HF_HUB_OFFLINE"))):
        return ["HF_HUB_DISABLE_TELEMETRY=1 is not set"]
    return []


def request_logging(b: SpecBundle) -> list[str]:
    found = [f"vLLM argument {f}" for f in REQUEST_LOGGING_FLAGS if f in b.args]
    found += [f"{v}={b.effective_env[v]}" for v in REQUEST_LOGGING_ENV if truthy(b.effective_env.get(v))]
    return [f"{what} writes prompts or answers to the container log" for what in found]


def data_collection(b: SpecBundle) -> list[str]:
    return [f"deployment data_collector collection {c!r} is enabled (payload logging)" for c in b.data_collection]


def app_insights(b: SpecBundle) -> list[str]:
    return ["deployment app_insights_enabled is true"] if b.app_insights_enabled else []


def dev_mode(b: SpecBundle) -> list[str]:
    return ["VLLM_SERVER_DEV_MODE is set"] if truthy(b.effective_env.get("VLLM_SERVER_DEV_MODE")) else []


def runtime_lora(b: SpecBundle) -> list[str]:
    if truthy(b.effective_env.get("VLLM_ALLOW_RUNTIME_LORA_UPDATING")):
        return ["VLLM_ALLOW_RUNTIME_LORA_UPDATING is set"]
    return []


def literal_secrets(b: SpecBundle) -> list[str]:
    places = [
        ("deployment environment_variables", b.deployment_env),
        ("Dockerfile ENV", b.dockerfile.env),
        ("Dockerfile ARG", b.dockerfile.build_args),
    ]
    found = [
        f"{where} {name} holds a literal value"
        for where, values in places
        for name, value in values.items()
        if SECRET_NAME.match(name) and value.strip().lower() not in NOT_SECRET_VALUES
    ]
    return found + [f"vLLM argument {flag} carries a literal credential" for flag in secret_flags(b)]


def secret_flags(b: SpecBundle) -> dict[str, str]:
    flags = flag_values(b.args)
    return {f: flags[f] for f in SECRET_FLAGS if flags.get(f)}


def region_outside(b: SpecBundle) -> list[str]:
    if b.region not in b.allowed_regions:
        return [f"region {b.region!r} is not in R1_ALLOWED_REGIONS {b.allowed_regions}"]
    return []


def key_without_rotation(b: SpecBundle) -> list[str]:
    if b.auth_mode == "key" and b.key_rotation_days is None:
        return ["endpoint auth_mode is key and R1_KEY_ROTATION_DAYS is not set: keys never expire"]
    return []


def model_does_not_fit(b: SpecBundle) -> list[str]:
    c = b.capacity
    if c.kv_cache_bytes <= 0:
        return [f"{c.model} weights ({c.weights_bytes / 2**30:.1f} GiB) leave no KV cache on "
                f"{b.shape.tensor_parallel_size} GPU(s) of {c.instance_type} at "
                f"gpu_memory_utilization {b.shape.gpu_memory_utilization}"]
    return []


def max_model_len_vs_kv(b: SpecBundle) -> list[str]:
    c = b.capacity
    if 0 < c.kv_tokens < c.max_model_len:
        return [f"max_model_len {c.max_model_len} exceeds the {c.kv_tokens} KV-cache tokens: vLLM refuses to start"]
    return []


def max_model_len_vs_model(b: SpecBundle) -> list[str]:
    c = b.capacity
    if c.max_model_len > c.model_max_position_embeddings:
        return [f"--max-model-len {c.max_model_len} exceeds the model's max_position_embeddings "
                f"{c.model_max_position_embeddings}"]
    return []


def tp_exceeds_gpus(b: SpecBundle) -> list[str]:
    if b.shape.tensor_parallel_size > b.gpus:
        return [f"--tensor-parallel-size {b.shape.tensor_parallel_size} exceeds the {b.gpus} GPU(s) "
                f"of {b.instance_type}"]
    return []


def seqs_exceed_kv(b: SpecBundle) -> list[str]:
    c = b.capacity
    if c.kv_cache_bytes > 0 and b.shape.max_num_seqs > c.max_concurrent_sequences:
        return [f"--max-num-seqs {b.shape.max_num_seqs} exceeds the {c.max_concurrent_sequences} "
                f"{c.tokens_per_request}-token requests whose KV cache fits: requests get preempted"]
    return []


def concurrency_below_engine(b: SpecBundle) -> list[str]:
    s = b.shape
    if s.max_concurrent_requests_per_instance < s.max_num_seqs:
        return [f"max_concurrent_requests_per_instance {s.max_concurrent_requests_per_instance} is below "
                f"--max-num-seqs {s.max_num_seqs}: Azure answers 429 beyond "
                f"{2 * s.max_concurrent_requests_per_instance} requests per instance while the engine has "
                f"room for {s.max_num_seqs} at once"]
    return []


def concurrency_above_engine(b: SpecBundle) -> list[str]:
    s = b.shape
    if s.max_concurrent_requests_per_instance > s.max_num_seqs:
        return [f"max_concurrent_requests_per_instance {s.max_concurrent_requests_per_instance} exceeds "
                f"--max-num-seqs {s.max_num_seqs}: requests wait inside vLLM, where Azure cannot see or "
                "shed them"]
    return []


def timeout_too_short(b: SpecBundle) -> list[str]:
    c, timeout = b.capacity, b.shape.request_timeout_ms
    if timeout < c.min_request_timeout_ms:
        return [f"request_timeout_ms {timeout} is shorter than one answer: {c.min_request_timeout_ms} ms "
                f"(time to first token plus {c.decode_seconds:.0f} s of decoding); Azure answers 408"]
    return []


def timeout_tight(b: SpecBundle) -> list[str]:
    c, timeout = b.capacity, b.shape.request_timeout_ms
    if c.min_request_timeout_ms <= timeout < c.recommended_request_timeout_ms:
        return [f"request_timeout_ms {timeout} leaves no room for a request queued behind a full batch "
                f"(recommended {c.recommended_request_timeout_ms})"]
    return []


def output_exceeds_max_timeout(b: SpecBundle) -> list[str]:
    c = b.capacity
    if c.min_request_timeout_ms > MAX_REQUEST_TIMEOUT_MS:
        return [f"one answer needs {c.min_request_timeout_ms} ms, over Azure's {MAX_REQUEST_TIMEOUT_MS} ms maximum"]
    return []


def _probe_short(name: str, window: int, load: float) -> list[str]:
    if window < load:
        return [f"{name} probe window {window} s is shorter than the {load:.0f} s model load"]
    return []


def readiness_short(b: SpecBundle) -> list[str]:
    return _probe_short("readiness", b.shape.readiness_window_s, b.capacity.model_load_seconds)


def liveness_short(b: SpecBundle) -> list[str]:
    return _probe_short("liveness", b.shape.liveness_window_s, b.capacity.model_load_seconds)


def probe_tight(b: SpecBundle) -> list[str]:
    c = b.capacity
    return [
        f"{name} probe window {window} s is under {c.recommended_probe_window_s} s "
        f"(twice the {c.model_load_seconds:.0f} s model load)"
        for name, window in (("readiness", b.shape.readiness_window_s), ("liveness", b.shape.liveness_window_s))
        if c.model_load_seconds <= window < c.recommended_probe_window_s
    ]


R = Rule
RULES: tuple[Rule, ...] = (
    R("image-not-digest-pinned", "image", "error",
      "A tag can be moved to other content; only a digest names exactly what was reviewed and tested.",
      "Pin by digest: R1_IMAGE / R1_BASE_IMAGE = repo@sha256:<digest> (docker buildx imagetools inspect).",
      not_digest_pinned),
    R("image-latest-tag", "image", "error",
      "':latest' (or no tag) changes under a running rollout; a rollback could start different code.",
      "Reference an exact release by digest instead of ':latest'.",
      latest_tag),
    R("image-public-registry", "image", "warning",
      "With egress disabled the deployment can only pull from the workspace's Azure Container Registry.",
      "Push the serving image to the workspace ACR (<name>.azurecr.io) and reference it there.",
      public_registry),
    R("image-runs-as-root", "runtime-hardening", "error",
      "The upstream vLLM image has no USER: a compromised server process would be root in the container.",
      "Add a non-root USER (docker/Dockerfile runs as uid 10001).",
      runs_as_root),
    R("endpoint-public-network-access", "network", "error",
      "Azure enables public scoring access by default; the scoring URI is then reachable from the internet.",
      "Set the endpoint's public_network_access: disabled (R1_PUBLIC_NETWORK_ACCESS=disabled) and score "
      "through the workspace private endpoint.",
      endpoint_public),
    R("deployment-egress-not-disabled", "network", "error",
      "Open egress lets the container reach any internet host: model downloads, telemetry, exfiltration.",
      "Set egress_public_network_access: disabled (R1_EGRESS_PUBLIC_NETWORK_ACCESS), or waive this rule "
      "with the reason when the workspace managed VNet is in allow_only_approved_outbound mode.",
      egress_open),
    R("model-pulled-from-hub-at-start", "model-supply", "error",
      "Downloading weights from a public hub at start needs open egress, depends on a third party at every "
      "scale-out, and serves whatever the hub holds that day.",
      "Serve a registered model asset (R1_MODEL_SUPPLY=registered-asset) mounted at a local path, or bake "
      "the weights into the image (baked-in-image).",
      hub_at_start),
    R("hf-hub-not-offline", "model-supply", "error",
      "Without HF_HUB_OFFLINE=1 the Hugging Face client calls the hub for metadata and downloads.",
      "Set ENV HF_HUB_OFFLINE=1 in the image and serve the model from a local path.",
      hub_online),
    R("remote-code-trusted", "model-supply", "error",
      "--trust-remote-code executes Python shipped with the model repository inside the server.",
      "Remove --trust-remote-code; DeepSeek-R1-Distill-Llama-8B needs none.",
      remote_code),
    R("telemetry-not-disabled", "telemetry", "error",
      "vLLM sends anonymous usage statistics to its maintainers by default: data leaves the chosen region.",
      "Set ENV VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1 in the image.",
      vllm_telemetry),
    R("hf-telemetry-not-disabled", "telemetry", "warning",
      "The Hugging Face client reports usage unless offline or told not to.",
      "Set ENV HF_HUB_DISABLE_TELEMETRY=1 (and HF_HUB_OFFLINE=1).",
      hf_telemetry),
    R("request-logging-enabled", "telemetry", "error",
      "Request logging copies prompts and answers into container logs, which Azure ships and keeps.",
      "Remove --enable-log-requests / --enable-log-outputs and VLLM_DEBUG_LOG_API_SERVER_RESPONSE.",
      request_logging),
    R("data-collection-enabled", "telemetry", "error",
      "The deployment data collector stores request and response payloads in workspace storage.",
      "Remove data_collector from the deployment, or waive with the data-protection approval as reason.",
      data_collection),
    R("app-insights-enabled", "telemetry", "warning",
      "Application Insights receives request telemetry, possibly in another region.",
      "Set app_insights_enabled: false (R1_APP_INSIGHTS_ENABLED=false) or keep the resource in-region.",
      app_insights),
    R("vllm-dev-mode", "runtime-hardening", "error",
      "VLLM_SERVER_DEV_MODE exposes development endpoints such as /collective_rpc, 'extremely dangerous'.",
      "Unset VLLM_SERVER_DEV_MODE.",
      dev_mode),
    R("vllm-runtime-lora-updating", "runtime-hardening", "error",
      "Runtime LoRA updating lets any caller load adapters, i.e. change the served model, over HTTP.",
      "Unset VLLM_ALLOW_RUNTIME_LORA_UPDATING; ship adapters in the image or model asset.",
      runtime_lora),
    R("literal-secret-in-environment", "secrets", "error",
      "Environment variables are stored in the deployment spec and shown to anyone who can read it.",
      "Remove the value; use the endpoint's managed identity and Key Vault instead of a literal secret.",
      literal_secrets),
    R("region-not-allowed", "region", "error",
      "Data must stay in the regions the owner allowed.",
      "Deploy to a region in R1_ALLOWED_REGIONS (or change the allow-list deliberately).",
      region_outside),
    R("key-auth-without-rotation", "auth", "warning",
      "Endpoint keys never expire; a leaked key stays valid until regenerated.",
      "Prefer R1_AUTH_MODE=aad_token; with key auth set R1_KEY_ROTATION_DAYS and run the rotate-keys flow.",
      key_without_rotation),
    R("capacity-model-does-not-fit", "capacity", "error",
      "vLLM needs the weights plus some KV cache inside its share of GPU memory, or it will not start.",
      "Choose a larger R1_INSTANCE_TYPE, raise --gpu-memory-utilization or use tensor parallelism.",
      model_does_not_fit),
    R("capacity-max-model-len-exceeds-kv-cache", "capacity", "error",
      "vLLM refuses to start when one max-length sequence does not fit in the KV cache.",
      "Lower R1_VLLM__MAX_MODEL_LEN to at most the planned KV tokens.",
      max_model_len_vs_kv),
    R("capacity-max-model-len-exceeds-model", "capacity", "error",
      "vLLM refuses a max_model_len beyond the model's trained context.",
      "Lower R1_VLLM__MAX_MODEL_LEN to at most max_position_embeddings.",
      max_model_len_vs_model),
    R("capacity-tensor-parallel-exceeds-gpus", "capacity", "error",
      "The engine cannot start more tensor-parallel workers than the instance has GPUs.",
      "Lower --tensor-parallel-size or choose a SKU with more GPUs.",
      tp_exceeds_gpus),
    R("capacity-max-num-seqs-exceeds-kv-cache", "capacity", "warning",
      "More running sequences than the KV cache holds makes vLLM preempt and recompute: latency spikes.",
      "Set R1_VLLM__MAX_NUM_SEQS to the planner's recommended_max_num_seqs.",
      seqs_exceed_kv),
    R("capacity-concurrency-below-engine", "capacity", "error",
      "Azure admits 2 x max_concurrent_requests_per_instance per instance and answers 429 beyond it; below "
      "--max-num-seqs the GPU idles while clients are refused.",
      "Set R1_MAX_CONCURRENT_REQUESTS_PER_INSTANCE equal to R1_VLLM__MAX_NUM_SEQS.",
      concurrency_below_engine),
    R("capacity-concurrency-above-engine", "capacity", "warning",
      "Requests beyond --max-num-seqs queue inside vLLM, invisible to Azure's 429 back-pressure and metrics.",
      "Set R1_MAX_CONCURRENT_REQUESTS_PER_INSTANCE equal to R1_VLLM__MAX_NUM_SEQS.",
      concurrency_above_engine),
    R("capacity-request-timeout-too-short", "capacity", "error",
      "A timeout shorter than one expected answer turns every full-length reasoning answer into a 408.",
      "Set R1_REQUEST_TIMEOUT_MS to the planner's recommended_request_timeout_ms.",
      timeout_too_short),
    R("capacity-request-timeout-tight", "capacity", "warning",
      "A request may wait in Azure's queue for one whole generation before its own starts.",
      "Set R1_REQUEST_TIMEOUT_MS to the planner's recommended_request_timeout_ms.",
      timeout_tight),
    R("capacity-output-exceeds-max-timeout", "capacity", "error",
      "Azure cuts every request at 180 s; answers that need longer can never complete.",
      "Lower the expected output (max_tokens), stream, or serve faster (R1_WORKLOAD__*).",
      output_exceeds_max_timeout),
    R("capacity-readiness-window-short", "capacity", "error",
      "Azure marks the deployment failed when readiness has not passed within its window.",
      "Raise R1_PROBES__READINESS__INITIAL_DELAY or __FAILURE_THRESHOLD past the model load time.",
      readiness_short),
    R("capacity-liveness-window-short", "capacity", "error",
      "A liveness probe that fails during model load restarts the container before it can ever serve.",
      "Raise R1_PROBES__LIVENESS__INITIAL_DELAY past the model load time.",
      liveness_short),
    R("capacity-probe-window-tight", "capacity", "warning",
      "A slow image pull or weight load on a cold instance can overrun a window sized for a warm one.",
      "Give the probes twice the expected model load time (R1_WORKLOAD__MODEL_LOAD_SECONDS).",
      probe_tight),
)
RULES_BY_ID = {r.id: r for r in RULES}
