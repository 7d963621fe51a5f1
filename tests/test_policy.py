"""Policy gate: every rule fires on a spec that breaks it and stays quiet on the default plan."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest
import yaml

from tasks.cli import InputError
from tasks.policy.gate import WAIVER_EXPIRED, apply_waivers, blocking, check, gate
from tasks.policy.bundle import bundle_from_files, expand_command, flag_values, parse_dockerfile
from tasks.policy.rules import RULES, RULES_BY_ID
from tasks.settings import SettingsError, Waiver, load_settings
from tasks.plan.specs import DEPLOYMENT_YML, ENDPOINT_YML, rendered_files

GUIDE = Path(__file__).parent / "fixtures" / "guide"
DIGEST = "@sha256:" + "ab" * 32
TODAY = date(2026, 11, 27)


def rules_fired(bundle) -> set[str]:
    return {f.rule for f in check(bundle)}


def from_settings(**overrides):
    return bundle_from_files(load_settings(**overrides))


def with_files(tmp_path: Path, *, deployment=None, endpoint=None, dockerfile=None, **overrides):
    """Start from the rendered default specs and change one of them, as a migrating user would."""
    settings = load_settings(**overrides)
    files = rendered_files(settings)
    paths = {}
    changes = (("deployment_yaml", DEPLOYMENT_YML, deployment), ("endpoint_yaml", ENDPOINT_YML, endpoint))
    for key, rel, change in changes:
        if change is not None:
            data = yaml.safe_load(files[rel])
            change(data)
            paths[key] = tmp_path / Path(rel).name
            paths[key].write_text(yaml.safe_dump(data))
    if dockerfile is not None:
        paths["dockerfile"] = tmp_path / "Dockerfile"
        paths["dockerfile"].write_text(dockerfile)
    return bundle_from_files(settings, **paths)


def llama_config(tmp_path: Path, **changes) -> Path:
    from tests.test_capacity import LLAMA_8B_CONFIG

    path = tmp_path / "config.json"
    path.write_text(json.dumps({**LLAMA_8B_CONFIG, **changes}))
    return path


def env(**values):
    return from_settings(environment_variables=values)


def vllm(**values):
    return from_settings(vllm=values)


BASE_DOCKERFILE = rendered_files(load_settings())["docker/Dockerfile"]

# rule id -> a spec that breaks exactly that rule (others may fire too)
CASES = {
    "image-not-digest-pinned": lambda t: from_settings(image="r1acr.azurecr.io/r1-vllm:1.2"),
    "image-latest-tag": lambda t: from_settings(image="r1acr.azurecr.io/r1-vllm"),
    "image-public-registry": lambda t: from_settings(image="docker.io/someone/r1-vllm" + DIGEST),
    "image-runs-as-root": lambda t: with_files(t, dockerfile=BASE_DOCKERFILE.replace("USER 10001:10001", "USER root")),
    "endpoint-public-network-access": lambda t: from_settings(public_network_access="enabled"),
    "deployment-egress-not-disabled": lambda t: from_settings(egress_public_network_access="enabled"),
    "model-pulled-from-hub-at-start": lambda t: from_settings(model_supply="hub-at-start"),
    "hf-hub-not-offline": lambda t: env(HF_HUB_OFFLINE="0"),
    "remote-code-trusted": lambda t: vllm(extra_args=["--trust-remote-code"]),
    "telemetry-not-disabled": lambda t: env(VLLM_NO_USAGE_STATS="0", DO_NOT_TRACK="0"),
    "hf-telemetry-not-disabled": lambda t: env(HF_HUB_DISABLE_TELEMETRY="0", HF_HUB_OFFLINE="0"),
    "request-logging-enabled": lambda t: vllm(extra_args=["--enable-log-requests"]),
    "data-collection-enabled": lambda t: with_files(
        t, deployment=lambda d: d.update(data_collector={"collections": {"model_inputs": {"enabled": "true"}}})),
    "app-insights-enabled": lambda t: from_settings(app_insights_enabled=True),
    "vllm-dev-mode": lambda t: env(VLLM_SERVER_DEV_MODE="1"),
    "vllm-runtime-lora-updating": lambda t: env(VLLM_ALLOW_RUNTIME_LORA_UPDATING="True"),
    "literal-secret-in-environment": lambda t: env(HF_TOKEN="hf_" + "x" * 30),
    "region-not-allowed": lambda t: with_files(t, endpoint=lambda d: d.update(location="eastus2")),
    "key-auth-without-rotation": lambda t: from_settings(auth_mode="key"),
    "capacity-model-does-not-fit": lambda t: from_settings(model_config_path=llama_config(
        t, hidden_size=8192, intermediate_size=28672, num_hidden_layers=80, num_attention_heads=64)),
    "capacity-max-model-len-exceeds-kv-cache": lambda t: vllm(max_model_len=131072, gpu_memory_utilization=0.3),
    "capacity-max-model-len-exceeds-model": lambda t: from_settings(
        model_config_path=llama_config(t, max_position_embeddings=4096)),
    "capacity-tensor-parallel-exceeds-gpus": lambda t: vllm(extra_args=["--tensor-parallel-size", "2"]),
    "capacity-max-num-seqs-exceeds-kv-cache": lambda t: from_settings(
        vllm={"max_num_seqs": 512}, max_concurrent_requests_per_instance=512),
    "capacity-concurrency-below-engine": lambda t: from_settings(max_concurrent_requests_per_instance=16),
    "capacity-concurrency-above-engine": lambda t: from_settings(max_concurrent_requests_per_instance=300),
    "capacity-request-timeout-too-short": lambda t: from_settings(request_timeout_ms=10_000),
    "capacity-request-timeout-tight": lambda t: from_settings(request_timeout_ms=40_000),
    "capacity-output-exceeds-max-timeout": lambda t: from_settings(workload={"output_tokens": 8000}),
    "capacity-readiness-window-short": lambda t: from_settings(
        probes={"readiness": {"initial_delay": 10, "period": 10, "failure_threshold": 5}}),
    "capacity-liveness-window-short": lambda t: from_settings(
        probes={"liveness": {"initial_delay": 10, "period": 10, "failure_threshold": 5}}),
    "capacity-probe-window-tight": lambda t: from_settings(
        probes={"readiness": {"initial_delay": 100, "period": 10, "failure_threshold": 30}}),
}


def test_every_rule_has_a_case_and_well_formed_metadata():
    assert set(CASES) == set(RULES_BY_ID)
    for rule in RULES:
        assert rule.rationale.strip() and rule.remediation.strip()
        assert rule.id == rule.id.lower() and " " not in rule.id


def test_default_plan_is_quiet():
    assert check(from_settings()) == []


@pytest.mark.parametrize("rule_id", sorted(CASES))
def test_rule_fires(rule_id, tmp_path):
    findings = [f for f in check(CASES[rule_id](tmp_path)) if f.rule == rule_id]
    assert findings, f"{rule_id} did not fire"
    rule = RULES_BY_ID[rule_id]
    assert all(f.category == rule.category and f.severity == rule.severity for f in findings)
    assert all(f.message and f.remediation == rule.remediation for f in findings)


def test_guide_fixtures_are_blocked_in_every_required_category():
    bundle = bundle_from_files(
        load_settings(), GUIDE / "endpoint.yml", GUIDE / "deployment.yml", GUIDE / "Dockerfile"
    )
    findings = gate(bundle, [], TODAY)
    errors = {f.category for f in blocking(findings)}
    assert {"image", "network", "model-supply", "capacity"} <= errors
    assert "telemetry" in {f.category for f in findings}
    fired = {f.rule for f in findings}
    assert {"image-latest-tag", "model-pulled-from-hub-at-start", "capacity-concurrency-below-engine",
            "capacity-request-timeout-too-short", "key-auth-without-rotation"} <= fired
    messages = " ".join(f.message for f in findings)
    assert "max_concurrent_requests_per_instance 1 is below --max-num-seqs 16" in messages
    assert "request_timeout_ms 10000" in messages


# --- staying quiet where the rule should -------------------------------------------------------

@pytest.mark.parametrize(
    "bundle_factory",
    [
        lambda t: from_settings(auth_mode="key", key_rotation_days=30),  # rotation planned
        lambda t: env(DO_NOT_TRACK="1", VLLM_NO_USAGE_STATS="0"),  # either opt-out suffices
        lambda t: env(USE_HF_TOKEN="true", TOKENIZERS_PARALLELISM="false"),  # flags, not secrets
        lambda t: from_settings(model_supply="baked-in-image"),  # local path inside the image
        lambda t: with_files(t, dockerfile=BASE_DOCKERFILE.replace("USER 10001:10001", "USER vllm")),
        lambda t: from_settings(image="r1acr.azurecr.io/r1-vllm:1.2" + DIGEST),  # tag plus digest is pinned
    ],
)
def test_quiet_cases(bundle_factory, tmp_path):
    assert check(bundle_factory(tmp_path)) == []


def test_tag_only_image_is_an_error_even_for_the_fake_engine():
    findings = check(from_settings(image="local/fake-engine:1"))
    assert {"image-not-digest-pinned", "image-public-registry"} == {f.rule for f in findings}
    assert [f.rule for f in blocking(findings)] == ["image-not-digest-pinned"]


def test_root_user_variants(tmp_path):
    for user_line in ("", "USER 0\n", "USER root:root\n"):
        text = BASE_DOCKERFILE.replace("USER 10001:10001\n", user_line)
        assert "image-runs-as-root" in rules_fired(with_files(tmp_path, dockerfile=text))


def test_secret_messages_name_the_variable_not_the_value(tmp_path):
    secret = "s3cr3t-value-123"
    findings = check(with_files(
        tmp_path,
        deployment=lambda d: d["environment_variables"].update(AZURE_CLIENT_SECRET=secret, DB_PASSWORD=secret),
        dockerfile=BASE_DOCKERFILE.replace("EXPOSE", f"ARG OPENAI_API_KEY={secret}\nEXPOSE"),
    ))
    messages = [f.message for f in findings if f.rule == "literal-secret-in-environment"]
    assert len(messages) == 3
    assert any("AZURE_CLIENT_SECRET" in m for m in messages) and any("OPENAI_API_KEY" in m for m in messages)
    assert all(secret not in f.message for f in findings)


def test_credential_arguments_are_literal_secrets():
    findings = check(vllm(extra_args=["--api-key", "abcd1234", "--hf-token=hf_zyxw9876"]))
    messages = [f.message for f in findings if f.rule == "literal-secret-in-environment"]
    assert len(messages) == 2 and "--api-key" in messages[0] and "--hf-token" in messages[1]
    assert all("abcd1234" not in f.message and "hf_zyxw9876" not in f.message for f in findings)


def test_deployment_env_overrides_image_env_for_the_checks():
    """Azure sets deployment variables on the container: they win over the Dockerfile's ENV."""
    assert "telemetry-not-disabled" in rules_fired(env(VLLM_NO_USAGE_STATS="false", DO_NOT_TRACK="no"))


def test_request_logging_through_environment():
    assert "request-logging-enabled" in rules_fired(env(VLLM_DEBUG_LOG_API_SERVER_RESPONSE="true"))


def test_missing_yaml_fields_take_azures_defaults(tmp_path):
    """Azure's defaults: key auth, public access and egress enabled, 1 request, 5 s timeout."""

    def strip(d):
        for key in ("egress_public_network_access", "request_settings", "liveness_probe", "readiness_probe"):
            d.pop(key)

    def strip_endpoint(d):
        del d["public_network_access"], d["auth_mode"]

    bundle = with_files(tmp_path, deployment=strip, endpoint=strip_endpoint)
    assert {"deployment-egress-not-disabled", "endpoint-public-network-access", "key-auth-without-rotation",
            "capacity-concurrency-below-engine", "capacity-request-timeout-too-short",
            "capacity-probe-window-tight"} <= rules_fired(bundle)
    assert bundle.shape.max_concurrent_requests_per_instance == 1 and bundle.shape.request_timeout_ms == 5000
    assert bundle.shape.readiness_window_s == bundle.shape.liveness_window_s == 10 + 10 * 30


# --- waivers -------------------------------------------------------------------------------------

def test_waived_finding_stays_in_report_and_stops_blocking():
    bundle = from_settings(public_network_access="enabled")
    waiver = Waiver(rule="endpoint-public-network-access", reason="private DNS not ready; ticket 42")
    findings = gate(bundle, [waiver], TODAY)
    [f] = findings
    assert f.waived and f.waiver_reason == "private DNS not ready; ticket 42"
    assert blocking(findings) == []


def test_expired_waiver_is_an_error_and_does_not_waive():
    bundle = from_settings(public_network_access="enabled")
    waiver = Waiver(rule="endpoint-public-network-access", reason="temporary", expires=date(2026, 11, 26))
    findings = gate(bundle, [waiver], TODAY)
    assert {f.rule for f in blocking(findings)} == {"endpoint-public-network-access", WAIVER_EXPIRED}
    expired = next(f for f in findings if f.rule == WAIVER_EXPIRED)
    assert expired.category == "network" and "2026-11-26" in expired.message


def test_waiver_valid_through_its_expiry_day():
    findings = gate(from_settings(auth_mode="key"),
                    [Waiver(rule="key-auth-without-rotation", reason="legacy clients", expires=TODAY)], TODAY)
    assert [f.waived for f in findings] == [True]


def test_unknown_waiver_rule_is_a_settings_error():
    with pytest.raises(SettingsError) as err:
        apply_waivers([], [Waiver(rule="no-such-rule", reason="typo")], TODAY)
    assert err.value.problems[0].startswith("R1_POLICY_WAIVERS: unknown rule id(s) ['no-such-rule']")


def test_waivers_from_the_environment(monkeypatch):
    monkeypatch.setenv("R1_PUBLIC_NETWORK_ACCESS", "enabled")
    monkeypatch.setenv("R1_POLICY_WAIVERS", json.dumps(
        [{"rule": "endpoint-public-network-access", "reason": "pilot", "expires": "2099-01-01"}]))
    settings = load_settings()
    findings = gate(bundle_from_files(settings), settings.policy_waivers, TODAY)
    assert [(f.rule, f.waived) for f in findings] == [("endpoint-public-network-access", True)]


# --- reading user files --------------------------------------------------------------------------

def test_dockerfile_parser_reads_the_last_stage():
    text = (
        "FROM python:3.11 AS build\nUSER 1000\nENV A=1\n"
        "FROM --platform=linux/amd64 vllm/vllm-openai" + DIGEST + "\n"
        "# comment\nENV B=2 C=\"x y\"\nENV LEGACY value with spaces\nARG TOKEN\n"
        'ENTRYPOINT ["python3", "-m", "vllm.entrypoints.openai.api_server"]\nCMD ["--model", "/m"]\n'
    )
    d = parse_dockerfile(text)
    assert d.base_image == "vllm/vllm-openai" + DIGEST and d.user is None
    assert d.env == {"B": "2", "C": "x y", "LEGACY": "value with spaces"}
    assert d.build_args == {"TOKEN": ""}
    assert expand_command(d.command, {}) == ["python3", "-m", "vllm.entrypoints.openai.api_server", "--model", "/m"]


def test_command_expansion_keeps_quoted_words_and_splits_bare_ones():
    args = expand_command('serve --model "$MODEL_PATH" ${VLLM_ARGS}', {"MODEL_PATH": "/a b", "VLLM_ARGS": "--x 1 --y"})
    assert args == ["serve", "--model", "/a b", "--x", "1", "--y"]
    assert flag_values(args) == {"--model": "/a b", "--x": "1", "--y": None}


def test_exec_form_shell_wrapper_is_looked_into(tmp_path):
    text = BASE_DOCKERFILE.replace(
        BASE_DOCKERFILE.splitlines()[-1],
        'ENTRYPOINT ["/bin/sh", "-c", "python3 -m vllm.entrypoints.openai.api_server --model $MODEL_NAME $VLLM_ARGS"]')
    bundle = with_files(tmp_path, dockerfile=text)
    assert bundle.model_ref == "deepseek-ai/DeepSeek-R1-Distill-Llama-8B"
    assert bundle.shape.max_num_seqs == 256 and "model-pulled-from-hub-at-start" in rules_fired(bundle)


def test_unbalanced_quotes_in_the_command_are_an_input_error(tmp_path):
    text = BASE_DOCKERFILE.replace(BASE_DOCKERFILE.splitlines()[-1], 'ENTRYPOINT python3 "--model')
    with pytest.raises(InputError, match="cannot parse the container command"):
        with_files(tmp_path, dockerfile=text)


def test_vllm_serve_positional_model(tmp_path):
    text = BASE_DOCKERFILE.replace(
        BASE_DOCKERFILE.splitlines()[-1], "ENTRYPOINT vllm serve deepseek-ai/DeepSeek-R1-Distill-Llama-8B")
    assert "model-pulled-from-hub-at-start" in rules_fired(with_files(tmp_path, dockerfile=text))


@pytest.mark.parametrize(
    "name, content, expected",
    [
        ("deployment.yml", "name: x\nendpoint_name: r1-prod\ninstance_type: Standard_NC24ads_A100_v4\nfoo_bar: 1\n"
         "request_settings:\n  bogus: 2\n",
         "not a valid Azure ML spec: request_settings.bogus: Unknown field.; foo_bar: Unknown field.$"),
        ("deployment.yml", "name: x\nendpoint_name: r1-prod\ninstance_type: Standard_D2as_v4\n",
         "not a known GPU SKU"),
        ("endpoint.yml", "name: r1-prod\nauth_mode: password\n", "not a valid Azure ML spec: auth_mode: .*password"),
        ("endpoint.yml", "name: [r1\n", "not a valid Azure ML spec"),
    ],
)
def test_invalid_user_files_are_input_errors(tmp_path, name, content, expected):
    path = tmp_path / name
    path.write_text(content)
    kw = {"deployment_yaml": path} if name.startswith("deployment") else {"endpoint_yaml": path}
    with pytest.raises(InputError, match=expected):
        bundle_from_files(load_settings(), **kw)


def test_missing_file_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        bundle_from_files(load_settings(), dockerfile=tmp_path / "nope")


def test_unparsable_vllm_number_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="--max-num-seqs 'lots'"):
        with_files(tmp_path, deployment=lambda d: d["environment_variables"].update(VLLM_ARGS="--max-num-seqs lots"))


def test_unknown_model_without_config_is_a_settings_error():
    with pytest.raises(SettingsError, match="R1_MODEL_CONFIG_PATH"):
        from_settings(model_id="someone/unknown-model")


def test_guide_environment_builds_the_gated_dockerfile():
    from azure.ai.ml import load_environment

    build = load_environment(GUIDE / "environment.yml").build
    assert build.dockerfile_path == "Dockerfile"  # i.e. tests/fixtures/guide/Dockerfile, gated above


def test_deployment_referencing_a_registered_environment_is_judged_by_the_dockerfile(tmp_path):
    bundle = with_files(tmp_path, deployment=lambda d: d.update(environment="azureml:r1-vllm:3"))
    assert list(bundle.images) == ["Dockerfile FROM"] and check(bundle) == []


def test_kubernetes_deployment_is_not_accepted(tmp_path):
    path = tmp_path / "k8s.yml"
    path.write_text("name: blue\nendpoint_name: r1-prod\ntype: kubernetes\ninstance_type: gpu\n")
    with pytest.raises(InputError, match="k8s.yml: not a managed online deployment"):
        bundle_from_files(load_settings(), deployment_yaml=path)
