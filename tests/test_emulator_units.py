"""The emulator's pure parts: rules, durations, quota arithmetic, the image table, tokens, faults, store."""

from __future__ import annotations

import pytest

from emulator import images, rules
from emulator.faults import FaultInjector, Faults
from emulator.layout import StateDir
from emulator.runtime import tail_lines, trim_log
from emulator.store import Store
from emulator.tokens import ML_AUDIENCE, Issuer, TokenError
from emulator.skus import Sku, find_sku


@pytest.mark.parametrize("text, seconds", [
    ("PT1M30S", 90), ("PT2M", 120), ("PT10S", 10), ("PT0.5S", 0.5), ("P1DT1H", 90000), ("-PT5S", -5),
    ("PT3M", 180),
])
def test_iso_durations(text, seconds):
    assert rules.parse_duration(text, "x") == seconds


@pytest.mark.parametrize("text", ["", "P", "PT", "10s", "PT1X", "1M"])
def test_bad_durations_are_a_400(text):
    with pytest.raises(rules.ArmError) as err:
        rules.parse_duration(text, "requestTimeout")
    assert err.value.status == 400 and "requestTimeout" in err.value.message


def test_request_timeout_limit():
    assert rules.check_request_timeout(180) == 180_000
    with pytest.raises(rules.ArmError, match="180000"):
        rules.check_request_timeout(180.001)


@pytest.mark.parametrize("name, ok", [
    ("abc", True), ("r1-prod", True), ("A1-b2-c3", True), ("a" * 32, True),
    ("ab", False), ("a" * 33, False), ("1abc", False), ("ab--c", False), ("abc-", False), ("a_bc", False),
])
def test_names(name, ok):
    if ok:
        rules.check_name("endpoint", name)
    else:
        with pytest.raises(rules.ArmError, match="3-32 characters"):
            rules.check_name("endpoint", name)


@pytest.mark.parametrize("traffic, mirror, message", [
    ({"blue": 90}, {}, "sum to 0 or 100"),
    ({"blue": 100, "ghost": 0}, {}, "'ghost', which does not exist"),
    ({"blue": 101}, {}, "integer 0-100"),
    ({"blue": -10, "green": 110}, {}, "integer 0-100"),
    ({"blue": 100}, {"green": 51}, "maximum is 50%"),
    ({"blue": 100}, {"green": 10, "red": 10}, "only one deployment"),
    ({"blue": 50, "green": 50}, {"GREEN": 10}, "both live and mirror"),
])
def test_traffic_rules(traffic, mirror, message):
    with pytest.raises(rules.ArmError, match=message):
        rules.check_traffic(traffic, mirror, ["blue", "green", "red"])


def test_valid_traffic_passes():
    rules.check_traffic({}, {}, [])
    rules.check_traffic({"Blue": 0, "green": 0}, {}, ["blue", "green"])
    rules.check_traffic({"blue": 100, "green": 0}, {"green": 50, "red": 0}, ["blue", "green", "red"])


def test_delete_rule_covers_live_and_mirror_traffic():
    rules.check_deletable("green", {"blue": 100, "green": 0}, {})
    with pytest.raises(rules.ArmError, match="live traffic"):
        rules.check_deletable("Blue", {"blue": 100}, {})
    with pytest.raises(rules.ArmError, match="mirror traffic"):
        rules.check_deletable("green", {"blue": 100}, {"green": 10})


def test_quota_counts_cores_like_azure():
    a100 = find_sku("Standard_NC24ads_A100_v4")
    assert rules.quota_cores(a100, 1) == 24 and rules.quota_cores(a100, 3) == 72  # A100 skips the 20 %
    v100 = Sku("Standard_NC6s_v3", "V100", 6)
    assert rules.quota_cores(v100, 1) == 12 and rules.quota_cores(v100, 5) == 36  # ceil(1.2 N) x cores
    rules.check_quota(a100, 1, 24, rules.DEFAULT_GPU_QUOTA_CORES, "swedencentral")
    with pytest.raises(rules.ArmError, match="Current usage/limit: 48/48 cores. Additional needed: 24"):
        rules.check_quota(a100, 1, 48, rules.DEFAULT_GPU_QUOTA_CORES, "swedencentral")


def test_instance_count_and_type():
    assert rules.check_instance_count(50) == 50
    for bad in (0, 51, True, "2"):
        with pytest.raises(rules.ArmError, match="between 1 and 50"):
            rules.check_instance_count(bad)
    assert rules.check_instance_type("standard_nc24ads_a100_v4").name == "Standard_NC24ads_A100_v4"
    with pytest.raises(rules.ArmError, match="not supported"):
        rules.check_instance_type("Standard_F4s_v2")


class _EmptyRegistry:
    login_server = "r1emulatoracr.azurecr.io"

    def engine_of(self, image: str) -> None:
        return None


NOTHING_HELD = _EmptyRegistry()


@pytest.mark.parametrize("image, module", [
    ("local/fake-engine:1", "emulator.engines.fake"),
    ("myacr.azurecr.io/team/fake-engine@sha256:" + "a" * 64, "emulator.engines.fake"),
    ("r1acr.azurecr.io/r1-vllm@sha256:" + "b" * 64, "emulator.engines.vllm"),
    ("localhost:5000/r1-vllm:2", "emulator.engines.vllm"),
    ("vllm/vllm-openai:v0.32.0", "emulator.engines.vllm"),
    ("docker.io/vllm/vllm-openai", "emulator.engines.vllm"),
])
def test_image_table(image, module):
    assert images.engine_module(image, NOTHING_HELD) == module


@pytest.mark.parametrize("image", ["nginx:1", "localhost:5000/web", "myacr.azurecr.io/fake-engine-old:1", "",
                                   "r1emulatoracr.azurecr.io/fake-engine@sha256:" + "c" * 64])  # never built there
def test_unknown_images_cannot_be_pulled(image):
    with pytest.raises(images.ImageError, match="Failed to pull image"):
        images.engine_module(image, NOTHING_HELD)


def test_fake_engine_command_comes_from_the_engine():
    argv, env = images.instance_command("local/fake-engine:1", NOTHING_HELD)(8123, {})
    assert "emulator.engines.fake" in argv and "8123" in argv


def test_tail_lines(tmp_path):
    log = tmp_path / "x.log"
    log.write_text("".join(f"line {i}\n" for i in range(100_000)))
    assert tail_lines(log, 3) == ["line 99997", "line 99998", "line 99999"]
    assert tail_lines(log, 0) == [] and tail_lines(tmp_path / "missing.log", 5) == []


def test_trim_log_keeps_whole_last_lines(tmp_path):
    log = tmp_path / "x.log"
    log.write_text("".join(f"line {i}\n" for i in range(1000)))
    trim_log(log, max_bytes=100_000, keep_bytes=50)
    assert len(log.read_text().splitlines()) == 1000  # under the limit: untouched
    trim_log(log, max_bytes=1000, keep_bytes=50)
    assert log.read_text().splitlines()[-1] == "line 999"
    assert all(line.startswith("line ") for line in log.read_text().splitlines()) and log.stat().st_size <= 50


def test_faults_are_deterministic_and_validated():
    a = FaultInjector(Faults(error_rate=0.3, seed=3))
    b = FaultInjector(Faults(error_rate=0.3, seed=3))
    assert [a.next_error() for _ in range(50)] == [b.next_error() for _ in range(50)]
    injector = FaultInjector(Faults(fail_next=2, statuses=[503], retry_after=0.5))
    assert injector.next_error() == (503, "ServiceUnavailable", {"Retry-After": "0.5"})
    assert injector.next_error() is not None and injector.next_error() is None
    with pytest.raises(ValueError):
        Faults.model_validate({"statuses": [404]})
    with pytest.raises(ValueError):
        Faults.model_validate({"surprise": 1})
    assert FaultInjector(Faults(fail_provisioning=["*"])).provisioning_fails("anything")


def test_tokens_audiences_and_binding(tmp_path):
    state = StateDir(tmp_path)
    issuer = Issuer(state, "https://127.0.0.1:9999/")
    management, _ = issuer.issue("https://127.0.0.1:9999/.default")
    scoring, _ = issuer.issue("https://ml.azure.com/.default")
    assert issuer.verify(management, issuer.management_audiences) is not None
    assert issuer.verify(scoring, issuer.management_audiences) is None
    assert issuer.verify(scoring, {ML_AUDIENCE}) is not None
    expired, _ = issuer.issue("https://ml.azure.com/.default", lifetime_seconds=0)
    assert issuer.verify(expired, {ML_AUDIENCE}) is None
    aml, _ = issuer.issue_aml_token("/Subscriptions/S/x/onlineEndpoints/EP", 60)
    assert issuer.verify_aml_token(aml, "/subscriptions/s/x/onlineendpoints/ep")
    assert not issuer.verify_aml_token(aml, "/subscriptions/s/x/onlineendpoints/other")
    with pytest.raises(TokenError, match="not served"):
        issuer.issue("https://graph.microsoft.com/.default")
    other = Issuer(StateDir(tmp_path / "other"), "https://127.0.0.1:9999")
    assert other.verify(management, other.management_audiences) is None  # another emulator's key
    assert oct(state.signing_key.stat().st_mode & 0o777) == "0o600"
    assert oct(state.client_secret.stat().st_mode & 0o777) == "0o600"
    assert issuer.check_client_secret(state.client_secret.read_text().strip())
    assert not issuer.check_client_secret("guess") and not issuer.check_client_secret(None)


def test_store_transactions_are_all_or_nothing(tmp_path):
    store = Store(tmp_path / "s.sqlite")
    body = {"id": "/A/Endpoint", "name": "Endpoint", "properties": {}}
    with pytest.raises(RuntimeError):
        with store.transaction():
            store.put("endpoint", "/a", body)
            store.set_keys("/a/endpoint", "k1", "k2")
            raise RuntimeError("crash between writes")
    assert store.get("/a/endpoint") is None and store.keys("/a/endpoint") is None
    store.put("endpoint", "/a", body)
    store.put("deployment", "/a/endpoint", {"id": "/a/endpoint/deployments/x", "name": "x", "properties": {}})
    assert store.get("/A/ENDPOINT")["name"] == "Endpoint"
    store.delete("/a/Endpoint")
    assert store.all("deployment") == [] and store.all("endpoint") == []
