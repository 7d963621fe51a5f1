"""Zero downtime: streaming requests through the endpoint during a whole rollout all succeed, and the
deployment that served each one (the azureml-model-deployment header) follows the planned shares."""

from __future__ import annotations

import json
import threading

from pydantic import SecretStr

from tasks import clients
from tasks.azureml.endpoint import scoring_base
from tasks.loadtest.run import BackgroundLoad, LoadSpec, Destination
from tests.rollout_support import fast_env, knobs, run_in_process


class TimelineWatch:
    """Notes when (on the load's clock) each timeline event of the running rollout first appears."""

    def __init__(self, reports, load: BackgroundLoad):
        self.reports, self.load, self.seen = reports, load, {}
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._done.wait(0.05):
            for path in self.reports.glob("rollout-*/rollout.json"):
                try:
                    events = json.loads(path.read_text())["events"]
                except (ValueError, KeyError):
                    continue
                for e in events:
                    self.seen.setdefault((e["step"], e["status"]), self.load.now())

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._done.set()
        self._thread.join()


def share(records, colour: str, start: float, end: float) -> tuple[float, int]:
    window = [r for r in records if start <= r.sent_s and r.end_s <= end]
    return (sum(r.deployment == colour for r in window) / len(window) if window else float("nan")), len(window)


def test_no_failed_request_and_planned_shares_during_a_rollout(emulator, prefect_api, monkeypatch, tmp_path,
                                                               unique_name):
    endpoint = unique_name("live")
    env = fast_env(emulator.state_dir, tmp_path / "first", endpoint, R1_BAKE_SECONDS="3")
    status, first = run_in_process(monkeypatch, env)
    assert status == "completed", first

    settings = emulator.settings()
    ml = clients.ml_client(settings)
    dest = Destination(scoring_base(ml.online_endpoints.get(endpoint)),
                    SecretStr(ml.online_endpoints.get_keys(endpoint).primary_key), None, clients.data_plane_ca(settings))
    spec = LoadSpec(rate=20, max_concurrency=64, duration_s=3600, max_tokens=16, stream=True, model=settings.model_id)
    reports = tmp_path / "second"
    with BackgroundLoad(dest, spec) as load, TimelineWatch(reports, load) as watch:
        status, second = run_in_process(monkeypatch, {**env, "R1_REPORTS_DIR": str(reports),
                                                      "R1_ENVIRONMENT_VARIABLES": knobs(seed=31)})
    run = load.stop()
    assert status == "completed", second
    assert second["new"] == "green"

    records = run.records
    failed = [(r.status, r.error, r.error_detail) for r in records if not r.ok]
    assert len(records) > 50 and failed == []
    assert all(r.answer_chunks > 0 for r in records)  # streamed answers, not empty 200s

    seen = watch.seen
    before, n_before = share(records, "blue", 0, seen[("stage", "ok")])
    at_25, n_25 = share(records, "green", seen[("shift 25 %", "info")] + 0.3, seen[("shift 25 %", "ok")])
    at_100, n_100 = share(records, "green", seen[("shift 100 %", "info")] + 0.3, seen[("shift 100 %", "ok")])
    assert before == 1.0 and n_before > 0
    assert 0.08 <= at_25 <= 0.5 and n_25 >= 20, (at_25, n_25)
    assert at_100 == 1.0 and n_100 >= 20, (at_100, n_100)
