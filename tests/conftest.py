"""Suite-wide set-up: an isolated Prefect home, no telemetry, and one Prefect test server per session."""

from __future__ import annotations

import os
import tempfile

import pytest

os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="r1-prefect-home-"))
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["DO_NOT_TRACK"] = "1"
# Tests choose their settings explicitly; a developer's .env or R1_* variables must not leak in.
for _name in [n for n in os.environ if n.startswith("R1_")]:
    del os.environ[_name]


@pytest.fixture(scope="session")
def prefect_api():
    """A real (temporary) Prefect API for tests that run flows through the engine."""
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
            yield


@pytest.fixture(autouse=True)
def _no_dotenv(monkeypatch, tmp_path):
    """Run each test from a clean directory so a stray .env never changes its settings."""
    monkeypatch.chdir(tmp_path)
