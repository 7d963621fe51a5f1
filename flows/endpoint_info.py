"""Print how to call the endpoint the settings name: its scoring URL, traffic, and a working snippet.

    python -m flows.endpoint_info

Credentials are never printed: the snippet fetches them through the same client factory the flows use.
"""

from __future__ import annotations

import contextlib
import sys

from tasks import clients
from tasks.cli import EXIT_FAILED, EXIT_OK, run_cli
from tasks.azureml.endpoint import get_endpoint, scoring_base
from tasks.settings import load_settings

SNIPPET = '''\
from openai import OpenAI
import httpx
from tasks import clients
from tasks.azureml.scoring import scoring_bearer
from tasks.loadtest.client import tls_context
from tasks.settings import load_settings

settings = load_settings()
ml = clients.ml_client(settings)
bearer = scoring_bearer(lambda: ml.online_endpoints.get_keys(settings.endpoint_name))
client = OpenAI(base_url="{base}/v1", api_key=bearer().get_secret_value(),
                http_client=httpx.Client(verify=tls_context(clients.data_plane_ca(settings))))
stream = client.chat.completions.create(model=settings.model_id, stream=True, max_tokens=200,
    messages=[{{"role": "user", "content": "Which is better, summer or winter?"}}])
for chunk in stream:
    delta = chunk.choices[0].delta if chunk.choices else None
    if delta:
        print(getattr(delta, "reasoning", None) or delta.content or "", end="", flush=True)
'''


def main() -> int:
    settings = load_settings()
    try:
        with contextlib.redirect_stdout(sys.stderr):
            ml = clients.ml_client(settings)
            endpoint = get_endpoint(ml, settings.endpoint_name)
    except clients.EmulatorUnavailable as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_FAILED
    if endpoint is None:
        print(f"endpoint {settings.endpoint_name} does not exist (run a rollout first)", file=sys.stderr)
        return EXIT_FAILED
    base = scoring_base(endpoint)
    print(f"endpoint:    {endpoint.name} ({endpoint.auth_mode}, public network access "
          f"{endpoint.public_network_access or 'enabled'})")
    print(f"scoring URI: {endpoint.scoring_uri}")
    print(f"traffic:     {dict(endpoint.traffic or {})}")
    print(f"OpenAI base: {base}/v1   (TLS CA: {clients.data_plane_ca(settings)})")
    print("\nStream a chat completion (python, from the repository root with .venv/bin/python):\n")
    print(SNIPPET.format(base=base))
    return EXIT_OK


if __name__ == "__main__":
    run_cli(main)
