"""Scoring credentials: keys are cached, tokens refresh before expiry, values stay SecretStr."""

from azure.ai.ml.entities import EndpointAuthKeys, EndpointAuthToken
from pydantic import SecretStr

from tasks.azureml.scoring import scoring_bearer


def test_key_is_fetched_once_and_secret():
    calls = []
    provider = scoring_bearer(lambda: calls.append(1) or EndpointAuthKeys(primary_key="k1", secondary_key="k2"))
    first, second = provider(), provider()
    assert isinstance(first, SecretStr) and first.get_secret_value() == "k1"
    assert second.get_secret_value() == "k1" and len(calls) == 1
    assert "k1" not in repr(first) and "k1" not in str(first)


def test_token_refreshes_before_expiry():
    now = [1000.0]
    tokens = iter(["t1", "t2"])
    provider = scoring_bearer(
        lambda: EndpointAuthToken(access_token=next(tokens), expiry_time_utc=now[0] + 600), clock=lambda: now[0]
    )
    assert provider().get_secret_value() == "t1"
    now[0] += 300  # still well before expiry
    assert provider().get_secret_value() == "t1"
    now[0] += 250  # within the refresh margin
    assert provider().get_secret_value() == "t2"
