"""Hostile input, faults and damaged state (docs/emulator.md, "Hostile input and damaged state"): raw HTTP
against a running emulator. Nothing here may answer 500 or leave anything stored."""

from __future__ import annotations

import json
import socket
import sqlite3
import ssl
import stat
import subprocess
import sys
import threading
import time
from urllib.parse import urlsplit

import httpx
import pytest
from azure.ai.ml.entities import OnlineRequestSettings

from emulator import process
from emulator.bodies import MAX_BODY_BYTES
from emulator.http_limits import HEADER_TIMEOUT_SECONDS
from tasks import clients

ML_API = "?api-version=2023-04-01-preview"
INSIGHTS_API = "?api-version=2022-10-01"
CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def workspace(emulator) -> str:
    c = emulator.conn
    return (f"/subscriptions/{c['subscription_id']}/resourceGroups/{c['resource_group']}"
            f"/providers/Microsoft.MachineLearningServices/workspaces/{c['workspace']}")


def refused_with(answer: httpx.Response, status: int, codes: tuple[str, ...], field: str = "") -> None:
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert error["code"] in codes, error
    assert field in error["message"], error


# ---- wrong shapes, NaN, nesting -------------------------------------------------------------------

@pytest.mark.parametrize("body, field", [
    ({"properties": [1]}, "'properties'"),
    ({"identity": "x"}, "'identity'"),
    ({"tags": [1]}, "'tags'"),
    ({"tags": {"a": {"b": 1}}}, "tags.a"),
    ({"properties": {"traffic": [1]}}, "properties.traffic"),
    ({"properties": {"traffic": {"blue": [50]}}}, "properties.traffic.blue"),
    ({"properties": {"properties": {"k": 1}}}, "properties.properties.k"),
])
def test_an_endpoint_of_the_wrong_shape_is_refused_and_not_stored(emulator, arm, unique_name, body, field):
    url = f"{workspace(emulator)}/onlineEndpoints/{unique_name()}{ML_API}"
    refused_with(arm.put(url, json={"location": emulator.conn["location"], **body}), 400,
                 ("InvalidRequestContent", "BadRequest"), field)
    assert arm.get(url).status_code == 404


def test_traffic_keys_that_differ_only_by_case_are_refused(emulator, arm, endpoint):
    url = f"{workspace(emulator)}/onlineEndpoints/{endpoint}{ML_API}"
    for split in ("traffic", "mirrorTraffic"):
        body = {"location": emulator.conn["location"], "properties": {split: {"blue": 50, "BLUE": 50}}}
        refused_with(arm.put(url, json=body), 400, ("BadRequest",), f"properties.{split}")
    assert arm.get(url).json()["properties"]["traffic"] == {}


@pytest.mark.parametrize("change, field, code", [
    ({"sku": "x"}, "'sku'", "InvalidRequestContent"),
    ({"sku": {"capacity": "1"}}, "sku.capacity", "InvalidRequestContent"),
    ({"environmentVariables": ["A=1"]}, "properties.environmentVariables", "InvalidRequestContent"),
    ({"environmentVariables": {"A": {"b": 1}}}, "properties.environmentVariables.A", "InvalidRequestContent"),
    ({"livenessProbe": "x"}, "properties.livenessProbe", "InvalidRequestContent"),
    ({"readinessProbe": {"period": 10}}, "properties.readinessProbe.period", "InvalidRequestContent"),
    ({"requestSettings": {"requestTimeout": 5}}, "properties.requestSettings.requestTimeout", "InvalidRequestContent"),
    ({"requestSettings": []}, "properties.requestSettings", "InvalidRequestContent"),
    ({"instanceType": 7}, "properties.instanceType", "InvalidRequestContent"),
    ({"readinessProbe": {"period": "PT0S"}}, "properties.readinessProbe.period", "BadArgument"),
    ({"livenessProbe": {"period": "-PT1S"}}, "properties.livenessProbe.period", "BadArgument"),
    ({"readinessProbe": {"timeout": "PT0S"}}, "properties.readinessProbe.timeout", "BadArgument"),
    ({"readinessProbe": {"initialDelay": "PT0S"}}, "properties.readinessProbe.initialDelay", "BadArgument"),
    ({"livenessProbe": {"failureThreshold": 0}}, "properties.livenessProbe.failureThreshold", "BadArgument"),
    ({"readinessProbe": {"failureThreshold": -3}}, "properties.readinessProbe.failureThreshold", "BadArgument"),
])
def test_a_deployment_of_the_wrong_shape_is_refused_and_not_stored(emulator, arm, endpoint, change, field, code):
    ws = workspace(emulator)
    env = arm.put(f"{ws}/environments/hostile-env/versions/1{ML_API}",
                  json={"properties": {"image": "local/fake-engine:1"}}).json()["id"]
    props = {"instanceType": "Standard_NC24ads_A100_v4", "environmentId": env}
    body = {"location": emulator.conn["location"], "sku": {"name": "Default", "capacity": 1}, "properties": props}
    if "sku" in change:
        body["sku"] = change["sku"]
    else:
        props.update(change)
    url = f"{ws}/onlineEndpoints/{endpoint}/deployments/blue{ML_API}"
    refused_with(arm.put(url, json=body), 400, (code,), field)
    assert arm.get(url).status_code == 404


def test_asset_autoscale_keys_and_logs_bodies_of_the_wrong_shape_are_refused(emulator, arm, endpoint, unique_name):
    ws = workspace(emulator)
    c = emulator.conn
    autoscale = (f"/subscriptions/{c['subscription_id']}/resourceGroups/{c['resource_group']}"
                 f"/providers/Microsoft.Insights/autoscalesettings/{unique_name()}{INSIGHTS_API}")
    profile = {"name": "p", "capacity": {"minimum": "1", "maximum": "2", "default": "1"}, "rules": [
        {"metricTrigger": {"metricName": "RequestsPerMinute", "operator": "GreaterThan", "threshold": 1,
                           "timeWindow": "PT5M"},
         "scaleAction": {"direction": "Increase", "type": "ChangeCount", "value": "many", "cooldown": "PT1M"}}]}
    cases = [
        (arm.put(f"{ws}/models/{unique_name()}/versions/1{ML_API}", json={"properties": [1]}), "'properties'"),
        (arm.put(f"{ws}/environments/{unique_name()}/versions/1{ML_API}", json={"properties": {
            "image": "x", "inferenceConfig": {"scoringRoute": {"path": 5, "port": 8000}}}}),
         "properties.inferenceConfig.scoringRoute.path"),
        (arm.put(autoscale, json={"location": c["location"], "properties": [1]}), "'properties'"),
        (arm.put(autoscale, json={"location": c["location"], "properties": {
            "targetResourceUri": "/x", "profiles": [1]}}), "properties.profiles[0]"),
        (arm.put(autoscale, json={"location": c["location"], "properties": {
            "targetResourceUri": "/x", "profiles": [profile]}}), "properties.profiles[0].rules[0].scaleAction.value"),
        (arm.patch(autoscale, json={"properties": {"profiles": "x"}}), "properties.profiles"),
        (arm.post(f"{ws}/onlineEndpoints/{endpoint}/regenerateKeys{ML_API}", json={"keyType": ["Primary"]}),
         "keyType"),
        (arm.post(f"{ws}/onlineEndpoints/{endpoint}/deployments/blue/getLogs{ML_API}", json={"tail": "10"}),
         "tail"),
    ]
    for answer, field in cases:
        refused_with(answer, 400, ("InvalidRequestContent",), field)
    assert arm.get(autoscale).status_code == 404


@pytest.mark.parametrize("raw", [b'{"tags": {"a": NaN}}', b'{"tags": {"a": Infinity}}',
                                 b'{"tags": {"a": -Infinity}}', b'{"properties": {"description": 1e999}}',
                                 b'{"tags": {"a": "\\ud800"}}'])
def test_nan_infinity_and_lone_surrogates_are_refused_and_listing_still_works(emulator, arm, unique_name, raw):
    ws = workspace(emulator)
    answer = arm.put(f"{ws}/onlineEndpoints/{unique_name()}{ML_API}", content=raw,
                     headers={"content-type": "application/json"})
    refused_with(answer, 400, ("InvalidRequestContent",))
    assert arm.get(f"{ws}/onlineEndpoints{ML_API}").status_code == 200


@pytest.mark.parametrize("depth", [65, 100_000])
def test_deep_nesting_is_refused(emulator, arm, unique_name, depth):
    raw = b'{"tags": ' + b"[" * depth + b"]" * depth + b"}"
    answer = arm.put(f"{workspace(emulator)}/onlineEndpoints/{unique_name()}{ML_API}", content=raw)
    refused_with(answer, 400, ("InvalidRequestContent",), "nested")
    assert arm.get(f"{workspace(emulator)}/onlineEndpoints{ML_API}").status_code == 200


# ---- body cap ---------------------------------------------------------------------------------------

def _tls_socket(emulator, url: str) -> ssl.SSLSocket:
    parts = urlsplit(url)
    raw = socket.create_connection((parts.hostname, parts.port), timeout=HEADER_TIMEOUT_SECONDS + 10)
    return emulator.tls().wrap_socket(raw, server_hostname=parts.hostname)


def _read_until_closed(sock: ssl.SSLSocket) -> bytes:
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (ConnectionResetError, ssl.SSLError):
        pass
    return data


def _read_response(sock: ssl.SSLSocket) -> bytes:
    """One whole response with a Content-Length (the connection may stay open)."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, body = data.split(b"\r\n\r\n", 1)
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def test_a_body_over_the_cap_is_413_by_content_length_before_it_is_sent(emulator, unique_name):
    token = clients.credential(emulator.settings()).get_token(emulator.conn["arm_url"] + "/.default").token
    path = f"{workspace(emulator)}/onlineEndpoints/{unique_name()}{ML_API}"
    with _tls_socket(emulator, emulator.conn["arm_url"]) as sock:
        sock.sendall(f"PUT {path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\n"
                     f"content-type: application/json\r\ncontent-length: 100000000\r\n\r\n{{".encode())
        head = _read_response(sock).split(b"\r\n\r\n", 1)
    assert head[0].startswith(b"HTTP/1.1 413"), head
    assert b'"RequestBodyTooLarge"' in head[1]


def test_a_chunked_body_over_the_cap_is_413_while_reading(emulator, arm, unique_name):
    def chunks():
        yield b'{"tags": {"a": "'
        for _ in range(MAX_BODY_BYTES // 65536 + 2):
            yield b"x" * 65536
        yield b'"}}'

    url = f"{workspace(emulator)}/onlineEndpoints/{unique_name()}{ML_API}"
    try:
        answer = arm.put(url, content=chunks())
    except httpx.TransportError:
        pass  # the server may close before the client has written everything; it must not store anything
    else:
        refused_with(answer, 413, ("RequestBodyTooLarge",))
    assert arm.get(url).status_code == 404


# ---- the scoring gateway --------------------------------------------------------------------------

@pytest.fixture
def scoring(emulator, ml, endpoint, fake_deployment):
    """(scoring base of ``endpoint``, its key, an httpx client) with one ready fake-engine deployment at 100 %
    that generates for a long time (max 2 requests in flight: 2 x 1 x 1)."""
    ml.online_deployments.begin_create_or_update(fake_deployment(
        endpoint, "blue", environment_variables={"FAKE_ENGINE_TTFT_MS": "60000"},
        request_settings=OnlineRequestSettings(request_timeout_ms=90_000,
                                               max_concurrent_requests_per_instance=1))).result()
    ep = ml.online_endpoints.get(endpoint)
    ep.traffic = {"blue": 100}
    ep = ml.online_endpoints.begin_create_or_update(ep).result()
    key = ml.online_endpoints.get_keys(endpoint).primary_key
    with httpx.Client(verify=emulator.tls(), trust_env=False, headers={"Authorization": f"Bearer {key}"}) as http:
        yield ep.scoring_uri.removesuffix("/score"), key, http


def test_escaped_control_characters_and_spaces_in_a_scoring_path_are_never_500(scoring):
    base, _, http = scoring
    for suffix in ("score%00", "sc%0D%0Aore", "v1/chat%00/completions", "%0d%0aX-Injected:%201"):
        answer = http.post(f"{base}/{suffix}", json=CHAT, timeout=10)
        assert answer.status_code == 400, (suffix, answer.status_code, answer.text)
    answer = http.get(f"{base}/v1/no%20such%20route", timeout=10)  # forwarded as sent: the engine has no such path
    assert answer.status_code == 424 and answer.headers["ms-azureml-model-error-statuscode"] == "404"


def test_a_non_streaming_client_that_disconnects_frees_its_slot(emulator, scoring, wait_for):
    base, key, http = scoring
    parts = urlsplit(base)
    request = (f"POST {parts.path}/v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {key}\r\n"
               f"content-type: application/json\r\ncontent-length: {len(json.dumps(CHAT))}\r\n\r\n").encode()
    body = json.dumps(CHAT).encode()
    for _ in range(2):  # both slots held by generations that would take 60 s
        with _tls_socket(emulator, base) as sock:
            sock.sendall(request + body)
            time.sleep(0.2)  # let the gateway forward it before the client goes away

    def admitted() -> bool:
        try:
            return http.post(f"{base}/v1/chat/completions", json=CHAT, timeout=1).status_code != 429
        except httpx.ReadTimeout:
            return True  # forwarded to the engine (which takes 60 s), not refused with 429

    wait_for(admitted, timeout=20, what="the disconnected callers' slots to be freed")


# ---- faults, state, permissions -------------------------------------------------------------------

def test_an_injected_fault_answers_only_after_authentication(emulator, arm):
    url = f"{workspace(emulator)}{ML_API}"
    emulator.set_faults(fail_next=1, statuses=[503])
    try:
        anonymous = httpx.get(emulator.conn["arm_url"] + url, verify=emulator.tls(), trust_env=False)
        assert anonymous.status_code == 401
        assert arm.get(url).status_code == 503  # the fault was still pending for the authenticated caller
    finally:
        emulator.admin("DELETE", "/_emulator/faults")


def test_the_key_store_is_readable_by_its_owner_only(emulator, endpoint):
    database = emulator.state.database
    for path in (database, database.with_name(database.name + "-wal"), database.with_name(database.name + "-shm")):
        if path.exists():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def _start_foreground(state_dir) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "emulator", "--state-dir", str(state_dir)],
                          cwd=process.REPO_ROOT, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("damage", ["missing", "zero bytes", "not a database"])
def test_a_lost_database_beside_existing_secrets_refuses_to_start(fresh_emulator, damage):
    state = fresh_emulator.state
    assert process.stop(state.root)
    for suffix in ("-wal", "-shm"):
        state.database.with_name(state.database.name + suffix).unlink(missing_ok=True)
    if damage == "missing":
        state.database.unlink()
    elif damage == "zero bytes":
        state.database.write_bytes(b"")
    else:
        state.database.write_bytes(b"this is not SQLite " * 300)
    answer = _start_foreground(state.root)
    assert answer.returncode == 1
    lines = answer.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), answer.stderr
    assert str(state.database) in lines[0] and "delete the state dir" in lines[0]
    assert process.running_pid(state) is None


def test_a_corrupt_row_is_quarantined_and_the_rest_is_served(fresh_emulator, unique_name):
    emulator = fresh_emulator
    ws = workspace(emulator)
    good, bad, nan = unique_name(), unique_name(), unique_name()
    with emulator.arm_client() as arm:
        for name in (good, bad, nan):
            assert arm.put(f"{ws}/onlineEndpoints/{name}{ML_API}",
                           json={"location": emulator.conn["location"]}).status_code == 201
    assert process.stop(emulator.state_dir)
    with sqlite3.connect(emulator.state.database) as db:
        db.execute("UPDATE resources SET body = '{\"id\": ' WHERE name = ?", (bad,))
        db.execute("UPDATE resources SET body = replace(body, '\"tags\": {}', '\"tags\": {\"a\": NaN}') "
                   "WHERE name = ?", (nan,))
    db.close()
    process.start_detached(emulator.state_dir, [])
    with emulator.arm_client() as arm:
        listed = arm.get(f"{ws}/onlineEndpoints{ML_API}")
        assert listed.status_code == 200
        assert [e["name"] for e in listed.json()["value"]] == [good]
        assert arm.get(f"{ws}/onlineEndpoints/{bad}{ML_API}").status_code == 404
        key = arm.post(f"{ws}/onlineEndpoints/{good}/listKeys{ML_API}").json()["primaryKey"]
    answer = httpx.post(f"{emulator.conn['scoring_base']}/endpoints/{good}/score", json=CHAT, verify=emulator.tls(),
                        headers={"Authorization": f"Bearer {key}"}, trust_env=False)
    assert answer.status_code == 404  # no live deployment: the gateway works, not 500
    with sqlite3.connect(emulator.state.database) as db:
        quarantined = {row[0] for row in db.execute("SELECT name FROM quarantine WHERE kind = 'endpoint'")}
    db.close()
    assert quarantined == {bad, nan}
    log = emulator.state.log.read_text()
    assert log.count("QUARANTINED") == 2 and bad in log


# ---- slowloris --------------------------------------------------------------------------------------

def test_a_connection_that_does_not_finish_its_headers_is_closed(emulator):
    """Half a request line on each listener, and a connection that sends nothing: all closed in time."""
    results: dict[str, float] = {}

    def hold(label: str, url: str, payload: bytes) -> None:
        with _tls_socket(emulator, url) as sock:
            started = time.monotonic()
            sock.sendall(payload)
            try:
                _read_until_closed(sock)
            except TimeoutError:
                return  # still open after the limit + margin
            results[label] = time.monotonic() - started

    threads = [threading.Thread(target=hold, args=args) for args in [
        ("arm", emulator.conn["arm_url"], b"GET /_emulator/hea"),
        ("gateway", emulator.conn["scoring_base"], b"POST /endpoints/x/score HTTP/1.1\r\nhost: x\r\n"),
        ("silent", emulator.conn["arm_url"], b""),
    ]]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert set(results) == {"arm", "gateway", "silent"}, results
    assert all(seconds <= HEADER_TIMEOUT_SECONDS + 5 for seconds in results.values()), results
