"""One settings model for every flow: ``R1_*`` environment variables (nested with ``__``) or ``.env``.

Validation happens here, before any cloud call, and reports one line per problem naming the
environment variable, so a user can fix all of them in one go (see ``load_settings``).
"""

from __future__ import annotations

import json
import re
import shlex
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    BeforeValidator,
    Field,
    SecretStr,
    StrictInt,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from tasks.plan.skus import find_sku

REPO_ROOT = Path(__file__).resolve().parent.parent
ENV_PREFIX = "R1_"
NESTED_DELIMITER = "__"

AZURE_NAME = re.compile(r"^[A-Za-z](?:[A-Za-z0-9]|-(?!-))*$")
MAX_REQUEST_TIMEOUT_MS = 180_000

# Azure regions whose data centres sit in the EU Data Boundary countries (EU + EFTA).
EUROPEAN_REGIONS = [
    "swedencentral",
    "northeurope",
    "westeurope",
    "francecentral",
    "germanywestcentral",
    "italynorth",
    "polandcentral",
    "spaincentral",
    "norwayeast",
    "switzerlandnorth",
]

# The vLLM release the serving image is built FROM, pinned by digest (override with R1_BASE_IMAGE
# after verifying the digest of the release you have tested: `docker buildx imagetools inspect`).
DEFAULT_BASE_IMAGE = (
    "vllm/vllm-openai@sha256:"
    "0a51ea5b4ae2dc5d81890e5173f54203d2a3ae0cfffe51b8fd2afd4391bfd967"
)
# Names the deployment's environment variables set from settings; R1_ENVIRONMENT_VARIABLES may not.
RESERVED_ENV_VARS = ("MODEL_NAME", "MODEL_PATH", "VLLM_ARGS")
MODEL_ASSET = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}:[A-Za-z0-9][A-Za-z0-9._-]*$")



MAX_SHOWN_CHARS = 80  # an error line quotes at most this much of a value
MAX_LINE_CHARS = 400  # and is cut here, whatever a message quoted


def shown(value: Any) -> str:
    """``repr(value)``, cut short: an error line must stay readable whatever was pasted into a variable."""
    text = repr(value)
    return text if len(text) <= MAX_SHOWN_CHARS else f"{text[:MAX_SHOWN_CHARS]}... ({len(text)} characters)"


def _json(value: Any) -> Any:
    """Decode a JSON setting ourselves, so malformed JSON is one clear line naming the variable, not a traceback."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError as err:
        raise ValueError(f"{shown(value)} is not valid JSON ({err.msg} at character {err.pos})") from None


# A setting written as JSON in the environment or .env (a list or an object), decoded by ``_json``.
Json = BeforeValidator(_json)


def check_azure_name(value: str) -> str:
    """Azure's rule for endpoint and deployment names: 3-32 chars, a letter first, single dashes."""
    if not 3 <= len(value) <= 32:
        raise ValueError(f"{shown(value)} must be 3-32 characters long")
    if not AZURE_NAME.fullmatch(value) or value.endswith("-"):
        raise ValueError(
            f"{shown(value)} must start with a letter and contain only letters, digits and single dashes"
        )
    return value


class VllmEngineArgs(BaseModel):
    """vLLM OpenAI-server arguments, typed so the planner and policy gate can reason about them."""

    max_num_seqs: int = Field(256, ge=1, le=1024)  # the capacity planner's recommendation
    max_model_len: int = Field(8192, ge=256, le=131072)
    gpu_memory_utilization: float = Field(0.90, gt=0.0, le=0.98)
    enforce_eager: bool = False
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "bfloat16"
    reasoning_parser: Literal["deepseek_r1"] | None = "deepseek_r1"
    extra_args: Annotated[list[str], Json] = Field(default_factory=list)

    def to_cli(self, served_model_name: str | None = None) -> list[str]:
        """The argument list that ends up in ``$VLLM_ARGS``."""
        args = [
            "--max-num-seqs", str(self.max_num_seqs),
            "--max-model-len", str(self.max_model_len),
            "--gpu-memory-utilization", str(self.gpu_memory_utilization),
            "--dtype", self.dtype,
        ]
        if self.enforce_eager:
            args.append("--enforce-eager")
        if self.reasoning_parser:
            args += ["--reasoning-parser", self.reasoning_parser]
        if served_model_name:
            args += ["--served-model-name", served_model_name]
        return args + list(self.extra_args)

    def to_env_value(self, served_model_name: str | None = None) -> str:
        return shlex.join(self.to_cli(served_model_name))


class Probe(BaseModel):
    """An Azure ML probe, in seconds, with Azure's minimums."""

    initial_delay: int = Field(10, ge=1)
    period: int = Field(10, ge=1)
    timeout: int = Field(2, ge=1)
    success_threshold: int = Field(1, ge=1)
    failure_threshold: int = Field(30, ge=1)

    @property
    def window_seconds(self) -> int:
        """How long the probe waits before the deployment is declared failed."""
        return self.initial_delay + self.period * self.failure_threshold


class Probes(BaseModel):
    liveness: Probe = Probe(initial_delay=600, period=10, timeout=2, failure_threshold=30)
    readiness: Probe = Probe(initial_delay=60, period=10, timeout=2, failure_threshold=90)


class Slo(BaseModel):
    """Service-level objectives every gate judges against (pure function in ``tasks.loadtest.slo``)."""

    ttft_p95_ms: float = Field(3000.0, gt=0)
    tpot_p95_ms: float = Field(150.0, gt=0)
    max_error_rate: float = Field(0.01, ge=0, le=1)
    min_goodput: float = Field(0.95, ge=0, le=1)  # share of requests meeting TTFT and TPOT and not failing
    min_requests: int = Field(20, ge=1)  # fewer samples than this is "inconclusive", never a pass


class Autoscale(BaseModel):
    """Azure Monitor autoscale policy for the serving deployment."""

    enabled: bool = True
    minimum: int = Field(1, ge=1, le=50)
    maximum: int = Field(3, ge=1, le=50)
    default: int = Field(1, ge=1, le=50)
    gpu_scale_out_percent: float = Field(70.0, gt=0, le=100)
    gpu_scale_in_percent: float = Field(20.0, ge=0, lt=100)
    latency_p95_scale_out_ms: float = Field(10_000.0, gt=0)
    window_minutes: int = Field(5, ge=1, le=60)
    scale_out_cooldown_minutes: int = Field(5, ge=1)
    scale_in_cooldown_minutes: int = Field(15, ge=1)

    @model_validator(mode="after")
    def _bounds(self) -> Autoscale:
        if not self.minimum <= self.default <= self.maximum:
            raise ValueError("autoscale needs minimum <= default <= maximum")
        if self.gpu_scale_in_percent >= self.gpu_scale_out_percent:
            raise ValueError("autoscale gpu_scale_in_percent must be below gpu_scale_out_percent")
        return self


class Workload(BaseModel):
    """What the capacity planner plans for: typical request sizes and the expected decode rate."""

    prompt_tokens: int = Field(512, ge=1)
    output_tokens: int = Field(750, ge=1)  # the guide's max_tokens; R1 thinks first, so answers are long
    decode_tokens_per_s: float = Field(30.0, gt=0)  # per sequence under load
    model_load_seconds: float = Field(300.0, gt=0)  # image pull + weight load on a cold instance


class LoadGate(BaseModel):
    """The evidence a rollout gathers: a load test aimed at the new colour, then live traffic while baking."""

    concurrency: int = Field(4, ge=1, le=256)
    requests: int = Field(40, ge=1)
    warmup: int = Field(2, ge=0)
    max_tokens: int = Field(128, ge=1)
    bake_rate: float = Field(4.0, gt=0)  # req/s of synthetic live traffic during the mirror and shift bakes
    seed: int = 0


class Guard(BaseModel):
    """The guard window after a promotion that kept the old colour warm (flows/guard.py)."""

    minutes: float = Field(60.0, ge=0, le=7 * 24 * 60)  # how long live traffic on the new colour is judged
    interval_seconds: float = Field(180.0, gt=0, le=3600)  # how often Azure Monitor metrics are read
    # RequestLatency_P95 (whole requests) limit; None: R1_SLO__TTFT_P95_MS + R1_SLO__TPOT_P95_MS x
    # R1_WORKLOAD__OUTPUT_TOKENS, the SLO's own limits for a request of the planned size
    request_latency_p95_ms: float | None = Field(None, gt=0)
    min_requests: int | None = Field(None, ge=1)  # fewer in an interval is inconclusive; None: R1_SLO__MIN_REQUESTS


class RegionTarget(BaseModel):
    """One region's endpoint for a multi-region rollout (flows/regions.py): where it lives, what differs there."""

    model_config = ConfigDict(extra="forbid")

    region: str
    workspace: str
    subscription_id: str | None = None  # None: R1_SUBSCRIPTION_ID
    resource_group: str | None = None  # None: R1_RESOURCE_GROUP
    endpoint_name: str | None = None  # None: R1_ENDPOINT_NAME
    instance_type: str | None = None
    instance_count: StrictInt | None = Field(None, ge=1, le=20)
    autoscale_minimum: StrictInt | None = Field(None, ge=1, le=50)
    autoscale_maximum: StrictInt | None = Field(None, ge=1, le=50)

    @field_validator("region")
    @classmethod
    def _lower(cls, v: str) -> str:
        return v.strip().lower()


class Waiver(BaseModel):
    """An explicit, reasoned exception to one policy rule; an expired waiver is itself an error."""

    rule: str
    reason: Annotated[str, StringConstraints(strip_whitespace=True, min_length=3)]
    expires: date | None = None


class Settings(BaseSettings):
    """Everything a flow needs, from ``R1_*`` variables or ``.env``. Secrets are ``SecretStr``."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=NESTED_DELIMITER,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        validate_default=True,
        enable_decoding=False,  # JSON settings are decoded by ``_json``: bad JSON is a line, not a traceback
    )

    target: Literal["local", "azure"] = "local"
    subscription_id: str = "00000000-0000-0000-0000-000000000000"
    resource_group: str = "rg-r1"
    workspace: str = "ws-r1"
    allowed_regions: Annotated[list[str], Json] = Field(default_factory=lambda: list(EUROPEAN_REGIONS))
    region: str = "swedencentral"
    endpoint_name: str = "r1-prod"
    auth_mode: Literal["aad_token", "key", "aml_token"] = "aad_token"
    # Empty: build docker/ in the workspace's registry with ACR Tasks (or reuse the build of the same context);
    # set: a digest-pinned image to deploy as is (docs/image-build.md).
    image: str = ""
    base_image: str = DEFAULT_BASE_IMAGE  # docker/Dockerfile's FROM
    upstream_base: str = ""  # a tag (vllm/vllm-openai:v0.x.y) redeploy imports into the workspace registry; "" = not tracked
    dockerfile: Path | None = None  # a hand-written Dockerfile instead of the rendered one; its folder is the context
    image_build_timeout_s: float = Field(1800.0, gt=0, le=28_800)  # then the run is cancelled (ACR's cap: 8 h)
    model_id: str = "deepseek-ai/DeepSeek-R1-Distill-Llama-8B"
    model_revision: str = "main"
    model_supply: Literal["registered-asset", "baked-in-image", "hub-at-start"] = "registered-asset"
    model_asset: str = "deepseek-r1-distill-llama-8b:1"  # name:version of the registered model asset
    # Where the weights already sit in the workspace's storage; the rollout registers the asset from here.
    model_asset_path: str = "azureml://datastores/workspaceblobstore/paths/models/deepseek-r1-distill-llama-8b/"
    model_mount_path: str = "/var/azureml-app/models/r1"  # where Azure mounts that asset in the container
    model_config_path: Path | None = None  # a HF config.json for the capacity planner
    instance_type: str = "Standard_NC24ads_A100_v4"
    instance_count: int = 1
    max_concurrent_requests_per_instance: int = Field(256, ge=1)  # = vllm.max_num_seqs
    request_timeout_ms: int = Field(84_000, ge=1)  # the planner's recommendation
    traffic_steps: Annotated[list[StrictInt], Json] = Field(default_factory=lambda: [10, 50, 100])
    bake_seconds: float = Field(60.0, ge=0)
    mirror_percent: int = 0
    environment_variables: Annotated[dict[str, str], Json] = Field(default_factory=dict)
    egress_public_network_access: Literal["enabled", "disabled"] = "disabled"
    public_network_access: Literal["enabled", "disabled"] = "disabled"
    app_insights_enabled: bool = False
    key_rotation_days: int | None = Field(None, ge=1)  # only meaningful with auth_mode=key
    keep_old_warm: bool = False
    keep_failed_deployment: bool = False  # after a rollback, keep the new colour at 0 % for forensics
    require_approval: bool = False
    approval_timeout_seconds: int = Field(3600, ge=1)
    emulator_state_dir: Path = REPO_ROOT / ".r1" / "emulator"
    reports_dir: Path = REPO_ROOT / "reports"
    policy_waivers: Annotated[list[Waiver], Json] = Field(default_factory=list)
    hf_token: SecretStr | None = None  # only for model_supply=hub-at-start, which the gate flags

    vllm: VllmEngineArgs = VllmEngineArgs()
    probes: Probes = Probes()
    slo: Slo = Slo()
    autoscale: Autoscale = Autoscale()
    workload: Workload = Workload()
    load_gate: LoadGate = LoadGate()
    guard: Guard = Guard()
    # Many regions (flows/regions.py): the targets, the wave plan (region names; [] = first target, then the rest),
    # the bake between waves and how many regions of a wave roll out at once.
    regions: Annotated[list[RegionTarget], Json] = Field(default_factory=list)
    waves: Annotated[list[list[str]], Json] = Field(default_factory=list)
    wave_bake_seconds: float = Field(300.0, ge=0, le=86_400)
    wave_concurrency: int = Field(4, ge=1, le=32)

    @field_validator("endpoint_name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_azure_name(v)

    @field_validator("model_asset")
    @classmethod
    def _asset(cls, v: str) -> str:
        v = v.removeprefix("azureml:")
        if not MODEL_ASSET.fullmatch(v):
            raise ValueError(
                f"{shown(v)} must be <name>:<version> with an explicit version (a label such as @latest "
                "makes the SDK resolve it with extra calls and can change under a running rollout)"
            )
        return v

    @field_validator("model_mount_path")
    @classmethod
    def _mount(cls, v: str) -> str:
        if not v.startswith("/"):
            raise ValueError(f"{shown(v)} must be an absolute path inside the container")
        return v

    @field_validator("image", "base_image")
    @classmethod
    def _image_ref(cls, v: str, info: ValidationInfo) -> str:
        if (not v and info.field_name == "base_image") or any(c.isspace() for c in v):
            raise ValueError(f"{shown(v)} is not an image reference")
        return v

    @field_validator("dockerfile")
    @classmethod
    def _dockerfile(cls, v: Path | None) -> Path | None:
        if v is not None and not v.is_file():
            raise ValueError(f"{shown(str(v))} is not a file")
        return v

    @field_validator("environment_variables")
    @classmethod
    def _env(cls, v: dict[str, str]) -> dict[str, str]:
        clash = sorted(set(v) & set(RESERVED_ENV_VARS))
        if clash:
            raise ValueError(
                f"sets {', '.join(clash)}, which the plan derives from R1_MODEL_ID, R1_MODEL_SUPPLY and "
                "R1_VLLM__*; change those settings instead"
            )
        bad = [k for k in v if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", k)]
        if bad:
            raise ValueError(f"{bad} are not valid environment variable names")
        return v

    @field_validator("request_timeout_ms")
    @classmethod
    def _timeout(cls, v: int) -> int:
        if v > MAX_REQUEST_TIMEOUT_MS:
            raise ValueError(f"{v} exceeds Azure's maximum of {MAX_REQUEST_TIMEOUT_MS} ms")
        return v

    @field_validator("traffic_steps")
    @classmethod
    def _steps(cls, v: list[int]) -> list[int]:
        if not v:
            raise ValueError("needs at least one step")
        if any(s <= 0 or s > 100 for s in v):
            raise ValueError(f"{shown(v)}: each step must be within 1-100")
        if any(b <= a for a, b in zip(v, v[1:])):
            raise ValueError(f"{shown(v)} must be strictly increasing")
        if v[-1] != 100:
            raise ValueError(f"{shown(v)} must end at 100")
        return v

    @field_validator("mirror_percent")
    @classmethod
    def _mirror(cls, v: int) -> int:
        if not 0 <= v <= 50:
            raise ValueError(f"{v} must be within 0-50 (Azure mirrors at most 50 %)")
        return v

    @field_validator("instance_count")
    @classmethod
    def _count(cls, v: int) -> int:
        if not 1 <= v <= 50:
            raise ValueError(f"{v} must be within 1-50 instances per deployment")
        return v

    @field_validator("instance_type")
    @classmethod
    def _sku(cls, v: str) -> str:
        sku = find_sku(v)
        if sku is None:
            raise ValueError(f"{shown(v)} is not a known GPU SKU for managed online endpoints")
        return sku.name

    @field_validator("allowed_regions")
    @classmethod
    def _regions(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("must name at least one region")
        return [r.lower() for r in v]

    @field_validator("region")
    @classmethod
    def _region_allowed(cls, v: str, info: ValidationInfo) -> str:
        allowed = info.data.get("allowed_regions")
        if allowed is not None and v.lower() not in allowed:
            raise ValueError(f"{shown(v)} is not in R1_ALLOWED_REGIONS {allowed}")
        return v.lower()

    @property
    def sku(self):
        return find_sku(self.instance_type)


class SettingsError(Exception):
    """Invalid settings: ``problems`` holds one human line per problem, naming the variable."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid settings:\n" + "\n".join(f"  {p}" for p in problems))


def env_var_name(loc: tuple) -> str:
    """``("vllm", "max_num_seqs")`` -> ``R1_VLLM__MAX_NUM_SEQS``; list indices name their parent."""
    parts = [str(p) for p in loc if not isinstance(p, int)]
    return ENV_PREFIX + NESTED_DELIMITER.join(p.upper() for p in parts) if parts else ENV_PREFIX


def describe_validation_error(err: ValidationError) -> list[str]:
    """One line per problem; never echoes a secret's value."""
    lines = []
    for e in err.errors(include_input=False, include_url=False):
        msg = e["msg"].removeprefix("Value error, ")
        name = env_var_name(e["loc"]) if e["loc"] else "settings"
        line = f"{name}: {msg}"
        lines.append(line if len(line) <= MAX_LINE_CHARS else line[:MAX_LINE_CHARS] + "... (cut)")
    return lines


def load_settings(**overrides) -> Settings:
    """Build and validate settings; raise ``SettingsError`` listing every problem."""
    try:
        return Settings(**overrides)
    except ValidationError as err:
        raise SettingsError(describe_validation_error(err)) from None
