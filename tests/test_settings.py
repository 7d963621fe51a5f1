"""Settings: R1_* variables, defaults, and one clear line per invalid value naming the variable."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from pydantic import SecretStr

from tasks.settings import EUROPEAN_REGIONS, REPO_ROOT, SettingsError, load_settings


def problems(monkeypatch, **env: str) -> list[str]:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as err:
        load_settings()
    return err.value.problems


def test_defaults_are_the_documented_ones():
    s = load_settings()
    assert (s.target, s.region, s.auth_mode) == ("local", "swedencentral", "aad_token")
    assert s.model_supply == "registered-asset"
    assert s.instance_type == "Standard_NC24ads_A100_v4" and s.instance_count == 1
    assert s.traffic_steps == [10, 50, 100] and s.mirror_percent == 0
    assert "swedencentral" in s.allowed_regions == EUROPEAN_REGIONS
    assert s.vllm.reasoning_parser == "deepseek_r1" and s.vllm.dtype == "bfloat16"
    # what the capacity planner recommends for the 8B model on this SKU (tests/test_capacity.py)
    assert s.vllm.max_num_seqs == s.max_concurrent_requests_per_instance == 256
    assert s.request_timeout_ms == 84_000


def test_environment_variables_nested_and_json(monkeypatch):
    monkeypatch.setenv("R1_REGION", "WestEurope")
    monkeypatch.setenv("R1_TRAFFIC_STEPS", "[5, 25, 100]")
    monkeypatch.setenv("R1_VLLM__MAX_NUM_SEQS", "32")
    monkeypatch.setenv("R1_PROBES__READINESS__FAILURE_THRESHOLD", "60")
    monkeypatch.setenv("R1_ENVIRONMENT_VARIABLES", '{"NCCL_DEBUG": "WARN"}')
    monkeypatch.setenv("R1_HF_TOKEN", "hf_secret_value")
    s = load_settings()
    assert s.region == "westeurope" and s.traffic_steps == [5, 25, 100]
    assert s.vllm.max_num_seqs == 32 and s.probes.readiness.failure_threshold == 60
    assert s.environment_variables == {"NCCL_DEBUG": "WARN"}
    assert isinstance(s.hf_token, SecretStr) and "hf_secret_value" not in repr(s) + str(s.model_dump())


def test_dotenv_file_is_read(tmp_path):
    (tmp_path / ".env").write_text("R1_ENDPOINT_NAME=r1-staging\nR1_INSTANCE_COUNT=3\n")
    s = load_settings()  # conftest chdirs into tmp_path
    assert (s.endpoint_name, s.instance_count) == ("r1-staging", 3)


@pytest.mark.parametrize(
    "env, variable, text",
    [
        ({"R1_ENDPOINT_NAME": "ab"}, "R1_ENDPOINT_NAME", "3-32 characters"),
        ({"R1_ENDPOINT_NAME": "a" * 33}, "R1_ENDPOINT_NAME", "3-32 characters"),
        ({"R1_ENDPOINT_NAME": "1r1-prod"}, "R1_ENDPOINT_NAME", "start with a letter"),
        ({"R1_ENDPOINT_NAME": "r1--prod"}, "R1_ENDPOINT_NAME", "single dashes"),
        ({"R1_ENDPOINT_NAME": "r1_prod"}, "R1_ENDPOINT_NAME", "letters, digits"),
        ({"R1_ENDPOINT_NAME": "r1-prod-"}, "R1_ENDPOINT_NAME", "single dashes"),
        ({"R1_REQUEST_TIMEOUT_MS": "180001"}, "R1_REQUEST_TIMEOUT_MS", "180000"),
        ({"R1_TRAFFIC_STEPS": "[10, 10, 100]"}, "R1_TRAFFIC_STEPS", "strictly increasing"),
        ({"R1_TRAFFIC_STEPS": "[50, 10, 100]"}, "R1_TRAFFIC_STEPS", "strictly increasing"),
        ({"R1_TRAFFIC_STEPS": "[10, 50]"}, "R1_TRAFFIC_STEPS", "end at 100"),
        ({"R1_TRAFFIC_STEPS": "[]"}, "R1_TRAFFIC_STEPS", "at least one"),
        ({"R1_MIRROR_PERCENT": "51"}, "R1_MIRROR_PERCENT", "0-50"),
        ({"R1_MIRROR_PERCENT": "-1"}, "R1_MIRROR_PERCENT", "0-50"),
        ({"R1_INSTANCE_COUNT": "0"}, "R1_INSTANCE_COUNT", "1-50"),
        ({"R1_INSTANCE_COUNT": "51"}, "R1_INSTANCE_COUNT", "1-50"),
        ({"R1_INSTANCE_TYPE": "Standard_D4s_v3"}, "R1_INSTANCE_TYPE", "not a known GPU SKU"),
        ({"R1_AUTH_MODE": "password"}, "R1_AUTH_MODE", "'aad_token', 'key' or 'aml_token'"),
        ({"R1_REGION": "eastus2"}, "R1_REGION", "not in R1_ALLOWED_REGIONS"),
        ({"R1_ALLOWED_REGIONS": '["eastus"]'}, "R1_REGION", "not in R1_ALLOWED_REGIONS"),
        ({"R1_TARGET": "aws"}, "R1_TARGET", "'local' or 'azure'"),
        ({"R1_MODEL_SUPPLY": "torrent"}, "R1_MODEL_SUPPLY", "registered-asset"),
        ({"R1_MODEL_ASSET": "r1@latest"}, "R1_MODEL_ASSET", "explicit version"),
        ({"R1_MODEL_MOUNT_PATH": "models/r1"}, "R1_MODEL_MOUNT_PATH", "absolute path"),
        ({"R1_IMAGE": "has space"}, "R1_IMAGE", "not an image reference"),
        ({"R1_ENVIRONMENT_VARIABLES": '{"VLLM_ARGS": "--x"}'}, "R1_ENVIRONMENT_VARIABLES", "sets VLLM_ARGS"),
        ({"R1_ENVIRONMENT_VARIABLES": '{"A B": "1"}'}, "R1_ENVIRONMENT_VARIABLES", "not valid environment variable"),
        ({"R1_VLLM__MAX_NUM_SEQS": "0"}, "R1_VLLM__MAX_NUM_SEQS", "greater than or equal to 1"),
        ({"R1_VLLM__GPU_MEMORY_UTILIZATION": "0.99"}, "R1_VLLM__GPU_MEMORY_UTILIZATION", "0.98"),
        ({"R1_VLLM__REASONING_PARSER": "qwen3"}, "R1_VLLM__REASONING_PARSER", "deepseek_r1"),
        ({"R1_PROBES__READINESS__PERIOD": "0"}, "R1_PROBES__READINESS__PERIOD", "greater than or equal to 1"),
        ({"R1_SLO__MAX_ERROR_RATE": "2"}, "R1_SLO__MAX_ERROR_RATE", "less than or equal to 1"),
        ({"R1_AUTOSCALE__MINIMUM": "4"}, "R1_AUTOSCALE", "minimum <= default <= maximum"),
        ({"R1_POLICY_WAIVERS": '[{"rule": "x", "reason": "because", "expires": "someday"}]'},
         "R1_POLICY_WAIVERS__EXPIRES", "date"),
        # malformed JSON, and values that slipped through a check before
        ({"R1_TRAFFIC_STEPS": "ten"}, "R1_TRAFFIC_STEPS", "'ten' is not valid JSON"),
        ({"R1_TRAFFIC_STEPS": "[10,50,100]}"}, "R1_TRAFFIC_STEPS", "is not valid JSON (Extra data"),
        ({"R1_TRAFFIC_STEPS": "[true,100]"}, "R1_TRAFFIC_STEPS", "valid integer"),
        ({"R1_ENVIRONMENT_VARIABLES": "A=B"}, "R1_ENVIRONMENT_VARIABLES", "'A=B' is not valid JSON"),
        ({"R1_ALLOWED_REGIONS": "swedencentral"}, "R1_ALLOWED_REGIONS", "is not valid JSON"),
        ({"R1_VLLM__EXTRA_ARGS": "--seed 1"}, "R1_VLLM__EXTRA_ARGS", "is not valid JSON"),
        ({"R1_ENDPOINT_NAME": "r1-prod\n"}, "R1_ENDPOINT_NAME", "single dashes"),
        ({"R1_MODEL_ASSET": "r1:1\n"}, "R1_MODEL_ASSET", "explicit version"),
        ({"R1_POLICY_WAIVERS": '[{"rule": "x", "reason": "   "}]'}, "R1_POLICY_WAIVERS__REASON", "at least 3"),
    ],
)
def test_each_invalid_value_names_its_variable(monkeypatch, env, variable, text):
    lines = problems(monkeypatch, **env)
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"{variable}: ") and text in lines[0], lines[0]


@pytest.mark.parametrize("env", [{"R1_ENDPOINT_NAME": "a" * 90_000}, {"R1_TRAFFIC_STEPS": "x" * 90_000},
                                 {"R1_TRAFFIC_STEPS": "[" + "1," * 45_000 + "100]"}])
def test_an_error_line_stays_short_whatever_was_pasted(monkeypatch, env):
    lines = problems(monkeypatch, **env)
    assert len(lines) == 1 and len(lines[0]) < 500, (len(lines[0]), lines[0][:120])


def test_json_settings_still_decode(monkeypatch):
    monkeypatch.setenv("R1_VLLM__EXTRA_ARGS", '["--seed", "1"]')
    monkeypatch.setenv("R1_ENVIRONMENT_VARIABLES", '{"A": "B"}')
    s = load_settings(traffic_steps=[20, 100])  # parameters (already decoded) pass as they are
    assert s.vllm.extra_args == ["--seed", "1"] and s.environment_variables == {"A": "B"}
    assert s.traffic_steps == [20, 100]


def test_all_problems_are_reported_at_once(monkeypatch):
    lines = problems(monkeypatch, R1_ENDPOINT_NAME="x", R1_MIRROR_PERCENT="90", R1_INSTANCE_COUNT="99")
    assert [line.split(":")[0] for line in lines] == ["R1_ENDPOINT_NAME", "R1_INSTANCE_COUNT", "R1_MIRROR_PERCENT"]


def test_problems_never_echo_secret_values(monkeypatch):
    lines = problems(
        monkeypatch,
        R1_HF_TOKEN="hf_supersecret",
        R1_ENDPOINT_NAME="x",
        R1_ENVIRONMENT_VARIABLES='{"MY TOKEN": "hf_supersecret"}',
        R1_POLICY_WAIVERS='[{"rule": "hf_supersecret"}]',
    )
    assert len(lines) == 3 and not any("hf_supersecret" in line for line in lines)


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("R1_")}
    return subprocess.run(
        [sys.executable, "-m", "flows.plan", *args], cwd=REPO_ROOT, env={**clean, **env},
        capture_output=True, text=True, timeout=120,
    )


@pytest.mark.parametrize(
    "env, args, expected",
    [
        ({"R1_ENDPOINT_NAME": "r1--prod", "R1_TRAFFIC_STEPS": "[10, 50]"}, [],
         ["error: R1_ENDPOINT_NAME: ", "error: R1_TRAFFIC_STEPS: "]),
        pytest.param({"R1_REGION": "eastus2"}, ["--json"],
                     ["error: R1_REGION: 'eastus2' is not in R1_ALLOWED_REGIONS"], marks=pytest.mark.slow),
        pytest.param({"R1_POLICY_WAIVERS": json.dumps([{"rule": "no-such-rule", "reason": "typo"}])}, ["--json"],
                     ["error: R1_POLICY_WAIVERS: unknown rule id(s) ['no-such-rule']"], marks=pytest.mark.slow),
        ({}, ["--deployment-yaml", "/nonexistent/d.yml"], ["error: /nonexistent/d.yml: no such file"]),
        ({"R1_TRAFFIC_STEPS": "ten", "R1_ENVIRONMENT_VARIABLES": "A=B"}, [],
         ["error: R1_TRAFFIC_STEPS: 'ten' is not valid", "error: R1_ENVIRONMENT_VARIABLES: 'A=B' is not valid JSON"]),
        ({"R1_BAKE_SECONDS": "2"}, [], ["error: R1_BAKE_SECONDS=2 with R1_LOAD_GATE__BAKE_RATE=4 req/s gives the "
                                        "new colour about 2.4 requests"]),
    ],
)
def test_cli_exits_2_with_one_line_per_problem(env, args, expected):
    """Invalid settings or files stop the CLI before Prefect starts (each run ~10 s: imports)."""
    result = cli(env, *args)
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == len(expected)
    assert all(line.startswith(prefix) for line, prefix in zip(lines, expected, strict=True))


def env_names(model, prefix: str = "R1_") -> list[tuple[str, str]]:
    """(parent prefix, leaf) for every variable the settings model reads."""
    from pydantic import BaseModel

    names = []
    for name, field in model.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            names += env_names(field.annotation, f"{prefix}{name.upper()}__")
        else:
            names.append((prefix, name.upper()))
    return names


def test_every_variable_is_documented():
    import re

    from tasks.settings import Settings

    lines = (REPO_ROOT / "docs" / "plan.md").read_text().splitlines()
    missing = [
        prefix + leaf
        for prefix, leaf in env_names(Settings)
        if not any(prefix in line and re.search(rf"(?<![A-Z]){leaf}(?![A-Z_])", line) for line in lines)
    ]
    assert missing == []
