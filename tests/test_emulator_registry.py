"""The emulator's container registry and ACR Tasks, through the unmodified SDK clients of the factory
(azure-mgmt-containerregistry 14.0.0, azure-storage-blob): upload, scheduleRun, runs, the log blob,
cancel, timeout, restart, RBAC, throttling, image pull by deployments, environment version lists, damaged rows."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import tarfile
import time
import uuid

import pytest
from azure.ai.ml.entities import Environment
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.mgmt.containerregistry.v2025_03_01_preview.models import DockerBuildRequest, PlatformProperties

from emulator import process, registry
from emulator.blobs import BlobService
from emulator.faults import FaultInjector, Faults
from emulator.integrity import quarantine_damaged
from emulator.layout import StateDir
from emulator.store import Store
from tasks import clients

FAKE_BASE = "r1emulator/fake-vllm-openai@sha256:" + "ab" * 32
ENTRYPOINT = ('ENTRYPOINT python3 -m vllm.entrypoints.openai.api_server --model "$MODEL_PATH" '
              '--served-model-name "$MODEL_NAME" --host 0.0.0.0 --port 8000 $VLLM_ARGS')
DOCKERFILE = f"""# the fake engine's base: what the fast profile builds
FROM {FAKE_BASE}
ENV HF_HUB_OFFLINE=1 \\
    HOME=/home/vllm
COPY app.txt /home/vllm/app.txt
USER 10001:10001
EXPOSE 8000
{ENTRYPOINT}
"""
FINAL = ("Succeeded", "Failed", "Canceled", "Timeout")


def context(files: dict[str, str]) -> bytes:
    """A deterministic tar.gz of ``files``, as the client uploads it."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, text in sorted(files.items()):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@dataclasses.dataclass
class Acr:
    """The registry as the product's client sees it (tasks/clients.py)."""

    settings: object
    client: object

    @property
    def rg(self) -> str:
        return self.settings.resource_group

    def upload(self, files: dict[str, str]) -> str:
        upload = self.client.registries.get_build_source_upload_url(self.rg, registry.NAME)
        clients.blob_client(self.settings, upload.upload_url).upload_blob(
            context(files), blob_type="BlockBlob", overwrite=True)
        return upload.relative_path

    def schedule(self, files: dict[str, str], tag: str | None = None):
        return self.client.registries.schedule_run(self.rg, registry.NAME, build_request(self.upload(files), tag))

    def wait(self, run_id: str, until=FINAL, timeout: float = 60.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = self.client.runs.get(self.rg, registry.NAME, run_id)
            if run.status in until:
                return run
            time.sleep(0.1)
        raise AssertionError(f"run {run_id} did not reach {until}")

    def log(self, run_id: str) -> tuple[str, dict[str, str]]:
        """The run's log through its SAS link, and the blob's metadata (keys lower-cased: they travel as headers)."""
        link = self.client.runs.get_log_sas_url(self.rg, registry.NAME, run_id).log_link
        blob = clients.blob_client(self.settings, link)
        metadata = blob.get_blob_properties().metadata
        return blob.download_blob().readall().decode(), {k.lower(): v for k, v in metadata.items()}


def build_request(source: str, tag: str | None = None, timeout: int = 600) -> DockerBuildRequest:
    return DockerBuildRequest(source_location=source, docker_file_path="Dockerfile",
                              image_names=[f"r1-vllm:{tag or uuid.uuid4().hex[:12]}"], is_push_enabled=True,
                              platform=PlatformProperties(os="Linux", architecture="amd64"), timeout=timeout)


def files(dockerfile: str = DOCKERFILE) -> dict[str, str]:
    return {"Dockerfile": dockerfile, "app.txt": f"build {uuid.uuid4()}\n"}


@pytest.fixture
def acr(emulator) -> Acr:
    settings = emulator.settings()
    return Acr(settings, clients.registry_client(settings))


@pytest.fixture(scope="module")
def built(emulator):
    """One successful build on the session emulator: (run, its log, the log's metadata)."""
    settings = emulator.settings()
    acr = Acr(settings, clients.registry_client(settings))
    run = acr.wait(acr.schedule(files()).run_id)
    return (run, *acr.log(run.run_id))


@pytest.fixture
def faults(emulator):
    yield emulator
    emulator.set_faults()


def test_the_workspace_names_its_registry(ml, acr):
    registry_id = ml.workspaces.get(acr.settings.workspace).container_registry
    found = acr.client.registries.get(acr.rg, registry_id.rsplit("/", 1)[-1])
    assert found.id.lower() == registry_id.lower()
    assert (found.login_server, found.sku.name, found.provisioning_state) == ("r1emulatoracr.azurecr.io",
                                                                               "Premium", "Succeeded")
    with pytest.raises(ResourceNotFoundError, match="ResourceNotFound"):
        acr.client.registries.get(acr.rg, "otheracr")


def test_a_build_pushes_a_digest_and_completes_its_log(built):
    run, text, metadata = built
    assert run.status == "Succeeded" and run.run_id.startswith("ca") and run.run_type == "QuickRun"
    image = run.output_images[0]
    assert (image.registry, image.repository) == ("r1emulatoracr.azurecr.io", "r1-vllm")
    assert image.digest.startswith("sha256:") and len(image.digest) == 71
    assert metadata == {"complete": "Succeeded"}
    assert f"Run ID: {run.run_id} was successful" in text and image.digest in text


def test_a_dockerfile_syntax_error_fails_the_run_naming_the_line(acr):
    broken = DOCKERFILE.replace("EXPOSE 8000", "EXPOSE")
    run = acr.wait(acr.schedule(files(broken)).run_id)
    text, metadata = acr.log(run.run_id)
    assert run.status == "Failed" and "Dockerfile:" in run.run_error_message
    assert run.run_error_message in text and metadata == {"complete": "Failed"}
    assert run.output_images == []


def test_a_bad_run_request_is_refused(acr):
    never_uploaded = "source/2025010100/" + str(uuid.uuid4()) + ".tar.gz"
    with pytest.raises(HttpResponseError, match="has not been uploaded") as refused:
        acr.client.registries.schedule_run(acr.rg, registry.NAME, build_request(never_uploaded))
    assert refused.value.status_code == 400
    with pytest.raises(HttpResponseError, match="timeout must be"):
        acr.client.registries.schedule_run(acr.rg, registry.NAME, build_request(acr.upload(files()), timeout=60))
    with pytest.raises(ResourceNotFoundError):
        acr.client.runs.get(acr.rg, registry.NAME, "ca999999")


def test_a_run_is_canceled(acr, faults):
    faults.set_faults(build_seconds=60)
    run = acr.schedule(files())
    acr.wait(run.run_id, until=("Running",))
    acr.client.runs.cancel(acr.rg, registry.NAME, run.run_id)
    assert acr.client.runs.get(acr.rg, registry.NAME, run.run_id).status == "Canceled"
    assert acr.log(run.run_id)[1] == {"complete": "Canceled"}


def test_throttling_and_unavailability_on_schedule_run_are_retried(acr, faults):
    source = acr.upload(files())
    faults.set_faults(fail_next=2, statuses=[503, 429], retry_after=0.1)
    run = acr.client.registries.schedule_run(acr.rg, registry.NAME, build_request(source))
    assert faults.admin("GET", "/_emulator/faults").json()["fail_next"] == 0  # both errors were served
    assert acr.wait(run.run_id).status == "Succeeded"


def test_a_reader_can_read_runs_but_not_schedule_them(emulator, built, monkeypatch):
    reader = emulator.add_principal("Reader")
    for name, value in emulator.environ(reader).items():
        monkeypatch.setenv(name, value)
    settings = emulator.settings()
    acr = Acr(settings, clients.registry_client(settings))
    assert acr.client.registries.get(acr.rg, registry.NAME).login_server == registry.LOGIN_SERVER
    assert acr.client.runs.get(acr.rg, registry.NAME, built[0].run_id).status == "Succeeded"
    with pytest.raises(HttpResponseError, match="AuthorizationFailed") as refused:
        acr.client.registries.schedule_run(acr.rg, registry.NAME, build_request("source/2025010100/x.tar.gz"))
    assert refused.value.status_code == 403 and "scheduleRun/action" in str(refused.value)


def test_a_deployment_runs_a_built_image_and_fails_on_one_the_registry_lacks(ml, endpoint, fake_deployment,
                                                                            built):
    image = built[0].output_images[0]
    held = f"{image.registry}/{image.repository}@{image.digest}"
    ready = ml.online_deployments.begin_create_or_update(fake_deployment(endpoint, "blue", image=held)).result()
    assert ready.provisioning_state.lower() == "succeeded"
    missing = f"{image.registry}/{image.repository}@sha256:{'0' * 64}"
    with pytest.raises(HttpResponseError, match="ImagePullFailure"):
        ml.online_deployments.begin_create_or_update(fake_deployment(endpoint, "green", image=missing)).result()
    assert f"Failed to pull image '{missing}'" in ml.online_deployments.get_logs("green", endpoint, lines=20)


def test_environment_versions_are_listed(ml, unique_name):
    name = unique_name("env")
    for version in ("1", "2"):
        ml.environments.create_or_update(Environment(name=name, version=version, image="local/fake-engine:1",
                                                     tags={"context": f"c{version}"}))
    listed = ml.environments.list(name=name)
    assert sorted((e.version, e.tags["context"]) for e in listed) == [("1", "c1"), ("2", "c2")]
    assert list(ml.environments.list(name=unique_name("none"))) == []


def test_a_run_in_flight_at_a_restart_is_failed_after_it(fresh_emulator):
    acr = Acr(fresh_emulator.settings(), clients.registry_client(fresh_emulator.settings()))
    fresh_emulator.set_faults(build_seconds=60)
    run = acr.schedule(files())
    acr.wait(run.run_id, until=("Running",))
    assert process.stop(fresh_emulator.state_dir)
    process.start_detached(fresh_emulator.state_dir, [])
    acr = Acr(fresh_emulator.settings(), clients.registry_client(fresh_emulator.settings()))
    after = acr.client.runs.get(acr.rg, registry.NAME, run.run_id)
    assert after.status == "Failed" and "restarted" in after.run_error_message
    text, metadata = acr.log(run.run_id)
    assert metadata == {"complete": "Failed"} and after.run_error_message in text
    assert acr.schedule(files()).run_id == "ca2"  # run ids go on from the stored runs


async def test_a_run_past_its_timeout_ends_in_timeout(tmp_path):
    """In process: ACR's shortest timeout is 300 s, so the request's timeout is cut after validation."""
    state = StateDir(tmp_path)
    store, blobs = Store(tmp_path / "state.sqlite"), BlobService(state)
    blobs.base_url = "https://127.0.0.1:1"
    acr = registry.Registry(store, blobs, FaultInjector(Faults(build_seconds=30)), "swedencentral",
                            "00000000-0000-0000-0000-000000000000", "rg-r1")
    source = "source/2025010100/" + str(uuid.uuid4()) + ".tar.gz"
    request = dataclasses.replace(registry.build_request(build_request(source).serialize()), timeout=0.3)
    run_id = acr.start(request, context(files()))["name"]
    for _ in range(100):
        run = store.get(f"{acr.id}/runs/{run_id}")["properties"]
        if run["status"] in FINAL:
            break
        await asyncio.sleep(0.05)
    assert run["status"] == "Timeout" and "timeout" in run["runErrorMessage"]
    log_blob = registry.Registry.log_blob(run_id)
    assert b"timed out" in blobs.read(registry.NAME, log_blob)
    await acr.close()
    store.close()


def test_a_damaged_run_or_image_row_is_quarantined_at_start(tmp_path):
    store = Store(tmp_path / "state.sqlite")
    reg = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ContainerRegistry/registries/r1emulatoracr"
    image = {"repository": "r1-vllm", "digest": "sha256:" + "0" * 64, "tags": ["1"], "engine": "emulator.engines.fake"}
    store.put("run", reg, {"id": f"{reg}/runs/ca1", "name": "ca1", "properties": {"status": "Succeeded",
                                                                                  "outputImages": []}})
    store.put("run", reg, {"id": f"{reg}/runs/ca2", "name": "ca2", "properties": {"status": "Bogus",
                                                                                  "outputImages": []}})
    store.put("image", reg, {"id": f"{reg}/i1", "name": "i1", "properties": image})
    store.put("image", reg, {"id": f"{reg}/i2", "name": "i2", "properties": {**image, "engine": "os.system"}})
    assert quarantine_damaged(store) == [f"{reg}/runs/ca2".lower(), f"{reg}/i2".lower()]
    assert [r["name"] for r in store.children("run", reg) + store.children("image", reg)] == ["ca1", "i1"]
    store.close()
