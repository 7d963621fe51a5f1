"""The project's scoring auth survives a key rotation: a 401 makes the provider fetch the key again (once for a
burst of requests) and the load client retry once with it; a credential that cannot refresh is not retried."""

import itertools
import threading

from azure.ai.ml.entities import EndpointAuthKeys
from pydantic import SecretStr

from tasks.azureml.scoring import scoring_bearer
from tasks.keys import no_keys
from tasks.loadtest.client import Destination, run_load
from tasks.loadtest.spec import LoadSpec
from tests.loadtest_support import Script, SseServer, Write, chat_chunk, usage_chunk

OK = Script(writes=[Write(0.0, [chat_chunk(content="Four", finish="stop")]), Write(0.0, [usage_chunk(3, 1), "[DONE]"])])
DENIED = Script(status=401, body=b'{"error": "invalid key"}')


def keys(primary: str) -> EndpointAuthKeys:
    return EndpointAuthKeys(primary_key=primary, secondary_key="s-" + primary)


def test_refresh_fetches_again_once_for_a_burst_of_rejections():
    served = iter(["k1", "k2", "k3"])
    calls = []
    provider = scoring_bearer(lambda: calls.append(1) or keys(next(served)))
    stale = provider()
    threads = [threading.Thread(target=provider.refresh, args=(stale,)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert provider().get_secret_value() == "k2" and len(calls) == 2 and provider.refreshes == 1
    assert provider.refresh(SecretStr("k2")).get_secret_value() == "k3"  # the new value rejected too: fetched again
    assert "k3" not in repr(provider) and "k3" not in str(provider())


async def test_a_401_is_retried_once_with_the_refreshed_key():
    live = ["new"]
    server = SseServer(lambda i, body: OK if server.served[i].headers["authorization"] == f"Bearer {live[0]}"
                       else DENIED)
    fetched = iter(["old", "new"])
    provider = scoring_bearer(lambda: keys(next(fetched)))
    with server:
        run = await run_load(Destination(server.base_url, provider), LoadSpec(requests=3, model="m"))
    assert [r.ok for r in run.records] == [True, True, True]
    assert [s.headers["authorization"] for s in server.served] == ["Bearer old", "Bearer new", "Bearer new",
                                                                   "Bearer new"]
    assert provider.refreshes == 1 and len(run.records) == 3  # one record for both attempts


async def test_no_refresh_no_retry_and_only_one_retry():
    server = SseServer(lambda i, body: DENIED)
    tokens = (SecretStr(f"t{i}") for i in itertools.count())
    with server:
        fixed = await run_load(Destination(server.base_url, SecretStr("k")), LoadSpec(requests=1, model="m"))
        plain = await run_load(Destination(server.base_url, lambda: next(tokens)), LoadSpec(requests=1, model="m"))
        refreshing = await run_load(Destination(server.base_url, scoring_bearer(lambda: keys("x"))),
                                    LoadSpec(requests=1, model="m"))
    assert [r.error for r in fixed.records + plain.records + refreshing.records] == ["http_401"] * 3
    assert len(server.served) == 4  # a key and a plain callable: one attempt each; a refreshable provider: two


def test_only_key_auth_has_keys_to_rotate():
    assert no_keys("key") is None and no_keys("Key") is None
    assert "no long-lived keys" in no_keys("aml_token") and "no long-lived keys" in no_keys("AADToken")
