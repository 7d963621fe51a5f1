"""The loadtest flow and its CLI: one JSON object on stdout, the report files, artifacts, exit codes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from flows.loadtest import EXIT_INCONCLUSIVE, exit_code, main
from tasks.cli import run_cli
from tests.loadtest_support import Script, SseServer, Write, chat_chunk, usage_chunk

REPO_ROOT = Path(__file__).resolve().parent.parent
KEY = "lt-key-7f3a9c1e55d2"
REQUIRED = ["requests_completed", "requests_failed", "ttft_ms", "ttfa_ms", "tpot_ms", "e2e_ms", "output_tokens_per_s",
            "requests_per_s", "achieved_rate", "send_lag_ms", "achieved_concurrency", "slo"]


def cli(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "R1_REPORTS_DIR": str(cwd / "reports"), **env}
    return subprocess.run([sys.executable, "-m", "flows.loadtest", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=240)


def answer(i: int, body: dict) -> Script:
    return Script(writes=[Write(0.004, [chat_chunk(reasoning="hm")]), Write(0.002, [chat_chunk(content="ok")]),
                          Write(0.002, [chat_chunk(content=".", finish="stop"), usage_chunk(8, 4), "[DONE]"])],
                  headers={"azureml-model-deployment": "green"})


@pytest.mark.parametrize(("args", "message"), [
    (["--base-url", "http://127.0.0.1:9", "--rate", "-1"], "rate"),
    (["--base-url", "http://127.0.0.1:9", "--api-key-env", "R1_TEST_UNSET_KEY"], "R1_TEST_UNSET_KEY is not set"),
    (["--base-url", "ftp://127.0.0.1:9"], "must be an http(s) URL"),
    (["--base-url", "http://127.0.0.1:9", "--max-concurrency", "3"], "give a rate too"),
    (["--base-url", "http://127.0.0.1:9", "--ca-bundle", "/nonexistent.pem"], "is not a file"),
    (["--base-url", "http://127.0.0.1:9", "--concurrency", "2", "--rate", "3"], "not allowed with"),
])
def test_invalid_input_exits_2_with_the_problem_and_sends_nothing(tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.setenv("R1_REPORTS_DIR", str(tmp_path / "reports"))
    with pytest.raises(SystemExit) as exited:
        run_cli(lambda: main(args))
    out, err = capsys.readouterr()
    assert exited.value.code == 2
    assert message in err and "Traceback" not in err
    assert out == "" and not (tmp_path / "reports").exists()


def test_exit_codes_follow_the_slo_verdict():
    verdict = {"pass": 0, "fail": 1, "inconclusive": EXIT_INCONCLUSIVE}
    for status, code in verdict.items():
        assert exit_code({"slo": {"status": status}}, gate=True) == code
        assert exit_code({"slo": {"status": status}}, gate=False) == 0


@pytest.mark.usefixtures("prefect_api")
async def test_cli_json_run_writes_the_report_and_artifacts_and_never_the_key(tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.settings import PREFECT_API_URL

    with SseServer(answer) as server:
        result = cli(["--base-url", server.base_url, "--api-key-env", "LT_KEY", "--deployment", "green",
                      "--rate", "50", "--arrival", "constant", "--requests", "24", "--warmup", "2", "--json"],
                     tmp_path, LT_KEY=KEY, PREFECT_API_URL=PREFECT_API_URL.value(), R1_SLO__MIN_REQUESTS="20")
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(result.stdout)  # exactly one JSON object, nothing else on stdout
    assert all(key in summary for key in REQUIRED)
    assert set(summary["ttft_ms"]) >= {"p50", "p90", "p95", "p99", "mean"}
    assert summary["requests_completed"] == 24 and summary["warmup_requests"] == 2
    assert summary["slo"]["status"] == "pass" and summary["served_by"] == {"green": 24}
    assert summary["target_rate"] == 50 and summary["scheduled_rate"] == pytest.approx(50)
    assert "load test: " in result.stderr  # the progress line goes to the log on stderr
    assert {s.headers["azureml-model-deployment"] for s in server.served} == {"green"}

    folder = Path(summary["report_dir"])
    assert folder.parent == tmp_path / "reports" and folder.name.startswith("loadtest-")
    assert {p.name for p in folder.iterdir()} == {"requests.jsonl", "summary.json", "summary.md", "loadtest.png"}
    rows = [json.loads(line) for line in (folder / "requests.jsonl").read_text().splitlines()]
    assert len(rows) == 26 and sum(r["warmup"] for r in rows) == 2
    assert (folder / "loadtest.png").read_bytes()[:4] == b"\x89PNG"
    assert "| ttft_ms |" in (folder / "summary.md").read_text()
    for text in [result.stdout, result.stderr, *(p.read_text(errors="ignore") for p in folder.iterdir())]:
        assert KEY not in text

    async with get_client() as client:
        artifacts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["loadtest-summary", "loadtest-metrics"])))
    assert {a.key for a in artifacts} == {"loadtest-summary", "loadtest-metrics"}
    assert all(KEY not in json.dumps(a.data) for a in artifacts)


@pytest.mark.parametrize(("fields", "message"), [
    ({"rate": 5, "concurrency": 4}, "cap an open-loop run with max_concurrency"),
    ({"duration_s": -1}, "--duration: Input should be greater than 0"),
    ({"requests": None}, "a run needs a request count and/or a duration"),
    ({"requests": 5, "arrival": "uniform"}, "--arrival: "),
])
def test_load_spec_problems_name_the_cli_flag(fields, message):
    from tasks.cli import InputError
    from tasks.loadtest.run import build_spec

    with pytest.raises(InputError, match=message.replace("(", r"\(")):
        build_spec(**({"requests": 10} | fields))
