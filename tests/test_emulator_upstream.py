"""The emulator's upstream registry and ACR ``importImage``, through azure-mgmt-containerregistry 14.0.0 (the
factory's client): seeded tags, the registry API a digest is read from (Bearer challenge, token, manifest; the
challenge parse as a unit), import by tag and by digest into the workspace registry (target tags, Force/NoForce)
with no digest in the answer (as on Azure), Azure's error for an unknown tag or digest, the admin route that
publishes a patched release (secret required), a build FROM the imported copy on the upstream repository's
engine, and the tags surviving a restart."""

from __future__ import annotations

import json
import sqlite3
import uuid

import httpx
import pytest
from azure.core.exceptions import HttpResponseError
from azure.mgmt.containerregistry.v2025_03_01_preview.models import ImportImageParameters, ImportSource

from emulator import process, registry, upstream
from emulator.admin import SECRET_HEADER
from tasks import clients
from tasks.azureml import registry as acr_calls
from tasks.redeploy.inputs import upstream_base
from tasks.redeploy.upstream_registry import (
    Challenge, NotUpstream, api_repository, bearer_challenge, upstream_digest,
)
from tests.rollout_support import FAKE_BASE
from tests.test_emulator_registry import DOCKERFILE, Acr
from tests.test_emulator_registry import FAKE_BASE as DOCKERFILE_BASE

FAKE_REPO = "r1emulator/fake-vllm-openai"
SEEDED = FAKE_BASE.split("@", 1)[1]


def digest(byte: str) -> str:
    return "sha256:" + byte * 64


def reg(emulator) -> acr_calls.Registry:
    s = emulator.settings()
    return acr_calls.workspace_registry(clients.ml_client(s), clients.registry_client(s), s.workspace)


def publish(emulator, image: str, new: str) -> httpx.Response:
    return emulator.admin("POST", "/_emulator/upstream", json={"image": image, "digest": new})


def test_seeded_tags_hold_the_digests_the_project_pins(emulator):
    tags = {f"{t['repository']}:{t['tag']}": t["digest"] for t in emulator.admin("GET", "/_emulator/upstream").json()["tags"]}
    assert tags[f"{FAKE_REPO}:v1"] == SEEDED
    assert tags["vllm/vllm-openai:v0.8.5"] == "sha256:0a51ea5b4ae2dc5d81890e5173f54203d2a3ae0cfffe51b8fd2afd4391bfd967"


def api_digest(emulator, repo: str, tag: str) -> str:
    """The digest the emulator's registry API answers for ``repo:tag`` (what redeploy reads before importing)."""
    base_url, verify = clients.upstream_registry(emulator.settings(), "docker.io")
    return upstream_digest(base_url, repo, tag, verify)


def registry_id(s) -> str:
    return (f"/subscriptions/{s.subscription_id}/resourceGroups/{s.resource_group}"
            f"/providers/Microsoft.ContainerRegistry/registries/{registry.NAME}")


def held(emulator) -> dict[tuple[str, str], dict]:
    return {(i["properties"]["repository"], i["properties"]["digest"]): i["properties"] for i in _images(emulator)}


def test_bearer_challenge_parse():
    assert bearer_challenge('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
                            'scope="repository:vllm/vllm-openai:pull"') == \
        Challenge("https://auth.docker.io/token", "registry.docker.io", "repository:vllm/vllm-openai:pull")
    assert bearer_challenge('bearer realm=https://r.example/t, scope="repository:a/b:pull,push"') == \
        Challenge("https://r.example/t", None, "repository:a/b:pull,push")
    for other in (None, "", 'Basic realm="x"', 'Bearer service="s"'):
        assert bearer_challenge(other) is None
    assert api_repository("docker.io", "nginx") == "library/nginx"
    assert api_repository("ghcr.io", "nginx") == "nginx" and api_repository("docker.io", "a/b") == "a/b"


def test_the_factory_names_the_upstream_registry_per_target(emulator):
    from tasks.settings import load_settings

    azure = load_settings(target="azure")
    assert clients.upstream_registry(azure, "docker.io") == ("https://registry-1.docker.io", True)
    assert clients.upstream_registry(azure, "ghcr.io") == ("https://ghcr.io", True)
    assert clients.upstream_registry(emulator.settings(), "docker.io") == (emulator.conn["arm_url"],
                                                                          emulator.conn["ca_cert"])


def test_the_registry_api_answers_a_digest_after_the_bearer_challenge(emulator):
    url, tls = emulator.conn["arm_url"], emulator.tls()
    manifest = f"{url}/v2/{FAKE_REPO}/manifests/v1"
    denied = httpx.head(manifest, verify=tls, trust_env=False)
    challenge = bearer_challenge(denied.headers["www-authenticate"])
    assert denied.status_code == 401 and challenge == Challenge(f"{url}/v2/token", upstream.SERVICE,
                                                                f"repository:{FAKE_REPO}:pull")
    assert httpx.get(f"{url}/v2/", verify=tls, trust_env=False).status_code == 401
    token = httpx.get(challenge.realm, params={"service": challenge.service, "scope": challenge.scope},
                      verify=tls, trust_env=False).json()["token"]
    auth = {"Authorization": f"Bearer {token}"}
    for method in ("HEAD", "GET"):
        answer = httpx.request(method, manifest, headers=auth, verify=tls, trust_env=False)
        assert answer.status_code == 200 and answer.headers["docker-content-digest"] == SEEDED
        assert answer.headers["content-type"] == upstream.MANIFEST_TYPE
    unknown = httpx.get(f"{url}/v2/{FAKE_REPO}/manifests/nope", headers=auth, verify=tls, trust_env=False)
    assert unknown.status_code == 404 and unknown.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"
    assert httpx.head(manifest, headers={"Authorization": "Bearer forged"}, verify=tls,
                      trust_env=False).status_code == 401
    assert api_digest(emulator, FAKE_REPO, "v1") == SEEDED
    assert api_digest(emulator, FAKE_REPO, SEEDED) == SEEDED  # by digest, too


def test_an_unknown_tag_or_repository_is_not_upstream(emulator):
    with pytest.raises(NotUpstream, match="no such tag upstream"):
        api_digest(emulator, FAKE_REPO, "nope")
    with pytest.raises(NotUpstream, match="no such tag upstream"):
        api_digest(emulator, "nobody/nothing", "v1")


def test_import_by_tag_lands_pinned_in_the_workspace_registry(emulator):
    s, where = emulator.settings(), reg(emulator)
    acr = clients.registry_client(s)
    assert acr_calls.import_image(acr, where, "docker.io", f"{FAKE_REPO}:v1", "bases/fake:v1") is None
    assert where.login_server == registry.LOGIN_SERVER
    assert held(emulator)[("bases/fake", SEEDED)]["tags"] == ["v1"]
    assert held(emulator)[("bases/fake", SEEDED)]["engine"] == "emulator.engines.fake"


def test_import_by_digest_answers_no_digest_as_azure_does(emulator):
    s, where = emulator.settings(), reg(emulator)
    acr = clients.registry_client(s)
    body = {"source": {"registryUri": "docker.io", "sourceImage": f"{FAKE_REPO}@{SEEDED}"},
            "targetTags": ["bases/bydigest:v1"], "mode": "Force"}
    with emulator.arm_client() as http:
        answer = http.post(f"{registry_id(s)}/importImage", json=body,
                           params={"api-version": clients.ACR_API_VERSION})
    assert answer.status_code == 200 and answer.content == b"" and "docker-content-digest" not in answer.headers
    assert held(emulator)[("bases/bydigest", SEEDED)]["tags"] == ["v1"]
    with pytest.raises(HttpResponseError) as err:  # a digest no tag of the repository points at
        acr_calls.import_image(acr, where, "docker.io", f"{FAKE_REPO}@{digest('0')}", "x:y")
    assert err.value.status_code == 400 and err.value.error.code == "InvalidParameters"
    assert digest("0") in err.value.error.message and "not found" in err.value.error.message


def test_publish_moves_the_tag_and_force_follows_it_noforce_refuses(emulator):
    s, where = emulator.settings(), reg(emulator)
    acr = clients.registry_client(s)
    tag = f"{FAKE_REPO}:p{uuid.uuid4().hex[:8]}"
    target = f"bases/p:{tag.rpartition(':')[2]}"
    assert publish(emulator, tag, SEEDED).status_code == 200
    acr_calls.import_image(acr, where, "registry.hub.docker.com", tag, target)
    assert target.rpartition(":")[2] in held(emulator)[("bases/p", SEEDED)]["tags"]
    patched = digest("c")
    assert publish(emulator, tag, patched).json()["digest"] == patched
    assert api_digest(emulator, FAKE_REPO, tag.rpartition(":")[2]) == patched
    no_force = ImportImageParameters(source=ImportSource(registry_uri="docker.io", source_image=tag),
                                     target_tags=[target], mode="NoForce")
    with pytest.raises(HttpResponseError) as refused:
        acr.registries.begin_import_image(where.resource_group, where.name, no_force).result()
    assert refused.value.error.code == "InvalidParameters" and "already exists" in refused.value.error.message
    acr_calls.import_image(acr, where, "docker.io", f"{FAKE_REPO}@{patched}", target)
    assert target.rpartition(":")[2] in held(emulator)[("bases/p", patched)]["tags"]


def test_unknown_tag_is_azures_invalid_parameters_error(emulator):
    s, where = emulator.settings(), reg(emulator)
    with pytest.raises(HttpResponseError) as err:
        acr_calls.import_image(clients.registry_client(s), where, "docker.io", f"{FAKE_REPO}:nope", "x:y")
    assert err.value.status_code == 400 and err.value.error.code == "InvalidParameters"
    assert f"{FAKE_REPO}:nope" in err.value.error.message and "not found" in err.value.error.message
    with pytest.raises(HttpResponseError) as other:  # a registry the upstream is not
        acr_calls.import_image(clients.registry_client(s), where, "ghcr.io", f"{FAKE_REPO}:v1", "x:y")
    assert other.value.error.code == "InvalidParameters"


@pytest.mark.parametrize("body", [{"image": f"{FAKE_REPO}:v9", "digest": "sha256:short"},
                                  {"image": "nginx:latest", "digest": "sha256:" + "d" * 64},
                                  {"image": f"{FAKE_REPO}@sha256:" + "d" * 64, "digest": "sha256:" + "d" * 64}])
def test_publish_refuses_what_cannot_be_a_base(emulator, body):
    response = emulator.admin("POST", "/_emulator/upstream", json=body)
    assert response.status_code == 400 and response.json()["error"]["code"] == "InvalidUpstreamTag"


@pytest.mark.parametrize("secret", [None, "wrong"])
def test_admin_route_needs_the_secret(emulator, secret):
    headers = {SECRET_HEADER: secret} if secret else {}
    for method in ("GET", "POST"):
        response = httpx.request(method, emulator.conn["arm_url"] + "/_emulator/upstream", headers=headers,
                                 json={"image": f"{FAKE_REPO}:v1", "digest": digest("e")}, verify=emulator.tls(),
                                 trust_env=False)
        assert response.status_code == 401 and response.json()["error"]["code"] == "InvalidClientSecret"
    assert _upstream_digest(emulator, f"{FAKE_REPO}:v1") == SEEDED


def test_a_build_from_the_imported_copy_runs_on_the_upstreams_engine(emulator):
    s, where = emulator.settings(), reg(emulator)
    tag = f"{FAKE_REPO}:b{uuid.uuid4().hex[:8]}"
    publish(emulator, tag, digest("f"))
    copy = api_digest(emulator, FAKE_REPO, tag.rpartition(":")[2])
    acr_calls.import_image(clients.registry_client(s), where, "docker.io", f"{FAKE_REPO}@{copy}", tag)
    pinned = f"{where.login_server}/{FAKE_REPO}@{copy}"
    acr = Acr(s, clients.registry_client(s))
    built = acr.wait(acr.schedule({"Dockerfile": DOCKERFILE.replace(DOCKERFILE_BASE, pinned), "app.txt": "x"}).run_id)
    assert built.status == "Succeeded", built.run_error_message
    out = built.output_images[0]
    engines = {(i["properties"]["repository"], i["properties"]["digest"]): i["properties"]["engine"]
               for i in _images(emulator)}
    assert engines[(out.repository, out.digest)] == "emulator.engines.fake"
    unknown = pinned.replace(copy, digest("0"))  # never imported: not in the registry
    failed = acr.wait(acr.schedule({"Dockerfile": DOCKERFILE.replace(DOCKERFILE_BASE, unknown), "app.txt": "x"}).run_id)
    assert failed.status == "Failed" and "not found" in failed.run_error_message


def test_published_tags_survive_a_restart(fresh_emulator):
    tag = f"{FAKE_REPO}:r1"
    assert publish(fresh_emulator, tag, digest("9")).status_code == 200
    process.stop(fresh_emulator.state_dir)
    process.start_detached(fresh_emulator.state_dir, [])
    assert _upstream_digest(fresh_emulator, tag) == digest("9")


def test_upstream_base_parses_tags_and_refuses_digests():
    assert upstream_base("") is None
    parsed = upstream_base("vllm/vllm-openai:v0.8.5")
    assert (parsed.registry, parsed.repository, parsed.tag) == ("docker.io", "vllm/vllm-openai", "v0.8.5")
    assert upstream_base("registry.hub.docker.com/vllm/vllm-openai:v1").registry == "registry.hub.docker.com"
    assert upstream.parse("docker.io/nginx:1") == ("library/nginx", "1")
    for bad in ("vllm/vllm-openai", f"{FAKE_REPO}@sha256:" + "a" * 64, "Vllm/X:1", "vllm/vllm-openai:"):
        with pytest.raises(Exception, match="R1_UPSTREAM_BASE"):
            upstream_base(bad)


def _upstream_digest(emulator, reference: str) -> str | None:
    repo, tag = upstream.parse(reference)
    tags = emulator.admin("GET", "/_emulator/upstream").json()["tags"]
    return next((t["digest"] for t in tags if (t["repository"], t["tag"]) == (repo, tag)), None)


def _images(emulator) -> list[dict]:
    """The registry's image rows, read-only from the running emulator's database."""
    db = sqlite3.connect(f"file:{emulator.state.database}?mode=ro", uri=True)
    try:
        return [json.loads(body) for (body,) in db.execute("SELECT body FROM resources WHERE kind = 'image'")]
    finally:
        db.close()
