"""The workspace's container registry and ACR Tasks: what ``az acr build`` calls, served by ARM.

One registry, ``r1emulatoracr`` (login server ``r1emulatoracr.azurecr.io``), in the served resource
group. A build context is uploaded to a write SAS on the blob listener (``listBuildSourceUploadUrl``),
``scheduleRun`` validates a ``DockerBuildRequest`` and starts the run as an asyncio task on the
emulator's loop, and ``emulator/builder.py`` really builds it. The run's log is an append blob that
gets metadata ``Complete=<status>`` when the run ends (what ``az acr build`` waits for). Runs and the
images they pushed are rows of the resources table (kinds ``registry``, ``run``, ``image``), so they
survive a restart; a run that was in flight when the emulator stopped is Failed after the restart.
``importImage`` copies a tag or digest of the emulator's upstream (``emulator/upstream.py``) in; a build may
start FROM that copy, on the engine of the upstream repository it came from.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from starlette.responses import JSONResponse, Response

from emulator import bodies, images, resources, rules, upstream
from emulator.blobs import BlobService
from emulator.builder import BASE_ENGINES, BuildFailed, BuiltImage, build
from emulator.faults import FaultInjector
from emulator.rules import ArmError
from emulator.store import Store
from emulator.upstream import Upstream, UpstreamError

log = logging.getLogger(__name__)

NAME = "r1emulatoracr"
LOGIN_SERVER = f"{NAME}.azurecr.io"
PROVIDER = "Microsoft.ContainerRegistry"
KINDS = ("registry", "run", "image", upstream.KIND)  # their rows in the resources table
ACTIVE = ("Queued", "Running")
FINAL = ("Succeeded", "Failed", "Canceled", "Timeout")
_REG = (r"/subscriptions/(?P<sub>[^/]+)/resourcegroups/(?P<rg>[^/]+)"
        r"/providers/microsoft\.containerregistry/registries/(?P<reg>[^/]+)")
_RUN = _REG + r"/runs/(?P<run>[^/]+)"
_SOURCE = re.compile(r"^source/\d{10}/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\.tar\.gz$")
_IMAGE_NAME = re.compile(r"^(?P<repo>[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*)"
                         r":(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_TIMEOUT_RANGE = (300, 28800)  # ACR's bounds for a run's timeout, seconds

Handler = Callable[..., Awaitable[Response]]


@dataclass(frozen=True)
class BuildRequest:
    """The fields of a ``DockerBuildRequest`` a run uses."""

    source: str
    dockerfile: str
    image_names: tuple[str, ...]
    push: bool
    timeout: float
    platform: dict


def _invalid(message: str) -> ArmError:
    return rules.bad_request(message, code="InvalidParameter")  # [INF] ACR's code for a bad run request


def build_request(body: Mapping) -> BuildRequest:
    """A validated ``DockerBuildRequest`` (400 naming the field otherwise)."""
    if body.get("type") != "DockerBuildRequest":
        raise _invalid(f"The run request type {body.get('type')!r} is not supported here: send a DockerBuildRequest.")
    source, dockerfile = body.get("sourceLocation"), body.get("dockerFilePath")
    if not isinstance(source, str) or not _SOURCE.match(source):
        raise _invalid("sourceLocation must be the relativePath that listBuildSourceUploadUrl returned.")
    if not isinstance(dockerfile, str) or not dockerfile.strip():
        raise bodies.invalid("dockerFilePath", "a non-empty string", dockerfile)
    names = body.get("imageNames")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and _IMAGE_NAME.match(n) for n in names):
        raise _invalid(f"imageNames must be a non-empty list of 'repository:tag' names, got {names!r}.")
    timeout = body.get("timeout", 3600)
    if isinstance(timeout, bool) or not isinstance(timeout, int) or not _TIMEOUT_RANGE[0] <= timeout <= _TIMEOUT_RANGE[1]:
        raise _invalid(f"timeout must be an integer from {_TIMEOUT_RANGE[0]} to {_TIMEOUT_RANGE[1]} seconds, "
                       f"got {timeout!r}.")
    platform = body.get("platform")
    if not isinstance(platform, dict) or str(platform.get("os", "")).lower() != "linux":
        raise _invalid("platform.os must be Linux (the only OS this registry builds for).")
    push = body.get("isPushEnabled", True)
    if not isinstance(push, bool):
        raise bodies.invalid("isPushEnabled", "a boolean", push)
    return BuildRequest(source, dockerfile, tuple(names), push, float(timeout),
                        {"os": "Linux", "architecture": platform.get("architecture") or "amd64"})


def import_request(body: Mapping) -> tuple[str, str, list[str], bool]:
    """(registryUri, sourceImage, targetTags, force) of a validated ``ImportImageParameters`` (400 otherwise)."""
    source = body.get("source")
    if not isinstance(source, dict):
        raise bodies.invalid("source", "an object", source)
    image = source.get("sourceImage")
    if not isinstance(image, str) or not image.strip():
        raise bodies.invalid("source.sourceImage", "a non-empty string", image)
    uri = source.get("registryUri")
    if source.get("resourceId") or not isinstance(uri, str) or not uri.strip():
        raise _invalid("source.registryUri must name a public registry (importing from another Azure "
                       "registry by resourceId is not served here).")
    targets = body.get("targetTags") or []
    if not isinstance(targets, list) or not all(isinstance(t, str) and _IMAGE_NAME.match(t) for t in targets):
        raise _invalid(f"targetTags must be a list of 'repository:tag' names, got {targets!r}.")
    if body.get("untaggedTargetRepositories"):
        raise _invalid("untaggedTargetRepositories is not served here: name the target with targetTags.")
    mode = body.get("mode", "NoForce")
    if mode not in ("NoForce", "Force"):
        raise bodies.invalid("mode", "NoForce or Force", mode)
    return uri, image, list(targets), mode == "Force"


def split_reference(reference: str) -> tuple[str, str | None, str | None]:
    """``repo[:tag][@sha256:..]`` (no registry host) -> (repository, tag, digest)."""
    name, _, digest = reference.partition("@")
    repo, colon, tag = name.rpartition(":")
    if not colon or "/" in tag:
        repo, tag = name, ""
    return repo.lower(), tag or None, digest or None


def stored(kind: str, raw: str) -> dict:
    """A registry, run or image row as served; ``ValueError`` with the reason if it is damaged."""
    try:
        body = bodies.parse(raw.encode())
    except ArmError as err:
        raise ValueError(err.message) from None
    props = body.get("properties")
    if not isinstance(body.get("id"), str) or not isinstance(body.get("name"), str) or not isinstance(props, dict):
        raise ValueError("body is not a resource object with an id, a name and properties")
    if kind == upstream.KIND:
        upstream.stored(body)
    if kind == "registry" and not isinstance(props.get("loginServer"), str):
        raise ValueError("properties.loginServer is not a string")
    if kind == "run" and (props.get("status") not in ACTIVE + FINAL or not isinstance(props.get("outputImages"), list)):
        raise ValueError("properties.status or properties.outputImages is not a run's")
    if kind == "image" and not (isinstance(props.get("digest"), str) and _DIGEST.match(props["digest"])
                                and isinstance(props.get("repository"), str)
                                and isinstance(props.get("tags"), list)
                                and props.get("engine") in images.ENGINES.values()):
        raise ValueError("properties are not an image's (repository, tags, sha256 digest, a known engine)")
    return body


def _stamp(line: str) -> str:
    """ACR's own log lines start with the UTC time."""
    return f"{dt.datetime.now(dt.timezone.utc):%Y/%m/%d %H:%M:%S} {line}"


def _seconds_since(iso: str) -> int:
    started = dt.datetime.strptime(iso, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.timezone.utc)
    return round((dt.datetime.now(dt.timezone.utc) - started).total_seconds())


class Registry:
    """The registry's ARM handlers, its runs (asyncio tasks) and the images it holds."""

    def __init__(self, store: Store, blobs: BlobService, faults: FaultInjector, location: str,
                 subscription_id: str, resource_group: str):
        self.store, self.blobs, self.faults = store, blobs, faults
        self.group_id = resources.resource_group_id(subscription_id, resource_group)
        self.id = f"{self.group_id}/providers/{PROVIDER}/registries/{NAME}"
        self.login_server = LOGIN_SERVER
        self._tasks: dict[str, asyncio.Task] = {}
        self.upstream = Upstream(store)
        if store.get(self.id) is None:
            store.put("registry", self.group_id, self._body(location))
        self._fail_interrupted()

    def routes(self) -> list[tuple[str, str, Handler]]:
        """(method, path pattern, handler) for ``ControlPlane``'s route table."""
        return [
            ("GET", _REG, self.get_registry),
            ("POST", _REG + "/listbuildsourceuploadurl", self.upload_url),
            ("POST", _REG + "/schedulerun", self.schedule_run),
            ("GET", _RUN, self.get_run),
            ("POST", _RUN + "/listlogsasurl", self.log_url),
            ("POST", _RUN + "/cancel", self.cancel_run),
            ("POST", _REG + "/importimage", self.import_image),
        ]

    async def close(self) -> None:
        """Stop the runs in flight (their subprocesses with them); a restart marks them Failed."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # ---- the registry ------------------------------------------------------------------------

    def _body(self, location: str) -> dict:
        return {"id": self.id, "name": NAME, "type": f"{PROVIDER}/registries", "location": location, "tags": {},
                "sku": {"name": "Premium", "tier": "Premium"},
                "properties": {"loginServer": LOGIN_SERVER, "provisioningState": "Succeeded",
                               "adminUserEnabled": False, "publicNetworkAccess": "Disabled",
                               "creationDate": resources.now_iso()}}

    async def get_registry(self, body: dict, sub: str, rg: str, reg: str) -> Response:
        return JSONResponse(self.store.get(self.id))

    async def upload_url(self, body: dict, sub: str, rg: str, reg: str) -> Response:
        path = f"source/{dt.datetime.now(dt.timezone.utc):%Y%m%d%H}/{uuid.uuid4()}.tar.gz"
        return JSONResponse({"uploadUrl": self.blobs.sas_url(NAME, path, "cw"), "relativePath": path})

    # ---- runs ---------------------------------------------------------------------------------

    def _run(self, run_id: str) -> dict:
        found = self.store.get(f"{self.id}/runs/{run_id}")
        if found is None:
            raise rules.not_found(f"Run '{run_id}'")
        return found

    @staticmethod
    def log_blob(run_id: str) -> str:
        return f"logs/{run_id}/rawtext.log"

    def _log(self, run_id: str, line: str) -> None:
        self.blobs.append(NAME, self.log_blob(run_id), (line + "\n").encode())

    def _next_run_id(self) -> str:
        numbers = [int(r["name"][2:]) for r in self.store.children("run", self.id) if r["name"][2:].isdigit()]
        return f"ca{max(numbers, default=0) + 1}"

    async def schedule_run(self, body: dict, sub: str, rg: str, reg: str) -> Response:
        request = build_request(body)
        context = await asyncio.to_thread(self.blobs.read, NAME, request.source)
        if context is None:
            raise _invalid(f"sourceLocation '{request.source}' has not been uploaded.")
        return JSONResponse(self.start(request, context))

    def start(self, request: BuildRequest, context: bytes) -> dict:
        """Store a Queued run, open its log and start building ``context`` on the loop; the run."""
        run_id, now = self._next_run_id(), resources.now_iso()
        run = {"id": f"{self.id}/runs/{run_id}", "name": run_id, "type": f"{PROVIDER}/registries/runs",
               "properties": {"runId": run_id, "status": "Queued", "runType": "QuickRun", "createTime": now,
                              "lastUpdatedTime": now, "outputImages": [], "provisioningState": "Succeeded",
                              "platform": request.platform, "timeout": int(request.timeout),
                              "agentConfiguration": {"cpu": 2}, "isArchiveEnabled": False}}
        self.store.put("run", self.id, run)
        self.blobs.create_append(NAME, self.log_blob(run_id))
        self._log(run_id, _stamp(f"Queued a build with ID: {run_id}"))
        self._tasks[run_id] = asyncio.create_task(self._execute(run_id, request, context))
        return run

    async def get_run(self, body: dict, sub: str, rg: str, reg: str, run: str) -> Response:
        return JSONResponse(self._run(run))

    async def log_url(self, body: dict, sub: str, rg: str, reg: str, run: str) -> Response:
        link = self.blobs.sas_url(NAME, self.log_blob(self._run(run)["name"]), "r")
        return JSONResponse({"logLink": link, "logArtifactLink": link})

    async def cancel_run(self, body: dict, sub: str, rg: str, reg: str, run: str) -> Response:
        found = self._run(run)
        if found["properties"]["status"] in ACTIVE:
            self._finish(found["name"], "Canceled", error="The run was canceled.")
            task = self._tasks.pop(found["name"], None)
            if task is not None:
                task.cancel()
                await asyncio.wait({task}, timeout=10)  # answer once the build (and any subprocess) is gone
        return Response(status_code=200)

    def _update(self, run_id: str, **changes: object) -> dict:
        run = self._run(run_id)
        run["properties"].update(changes, lastUpdatedTime=resources.now_iso())
        self.store.put("run", self.id, run)
        return run

    def _finish(self, run_id: str, status: str, output: list[dict] | None = None, error: str | None = None) -> None:
        """Record the final status and complete the log (``Complete=<status>``) in one step of the loop."""
        props = self._update(run_id, status=status, finishTime=resources.now_iso(), outputImages=output or [],
                             **({"runErrorMessage": error} if error else {}))["properties"]
        took = _seconds_since(props.get("startTime") or props["createTime"])
        ending = {"Succeeded": f"was successful after {took}s", "Canceled": f"was canceled after {took}s",
                  "Timeout": f"timed out after {took}s"}.get(status, f"failed after {took}s. Error: {error}")
        self._log(run_id, _stamp(f"Run ID: {run_id} {ending}"))
        self.blobs.set_metadata(NAME, self.log_blob(run_id), {"Complete": status})
        log.info("run %s: %s", run_id, status)

    async def _execute(self, run_id: str, request: BuildRequest, context: bytes) -> None:
        """The run: build, record the images; Timeout past the request's timeout. A cancel has already
        recorded Canceled when it cancels this task, and a stop leaves the run for the restart to fail."""
        self._update(run_id, status="Running", startTime=resources.now_iso())
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(request.timeout):
                started = loop.time()
                built = await build(context, request.dockerfile, list(request.image_names),
                                    lambda line: self._log(run_id, line), self.held_bases())
                await asyncio.sleep(self.faults.faults.build_seconds - (loop.time() - started))
        except TimeoutError:
            self._finish(run_id, "Timeout", error=f"The run exceeded its timeout of {request.timeout:g} seconds.")
        except BuildFailed as err:
            self._finish(run_id, "Failed", error=str(err))
        except Exception as err:  # a bug or a broken state dir must not leave the run Running forever
            log.exception("run %s failed unexpectedly", run_id)
            self._finish(run_id, "Failed", error=f"Internal error of the emulator's builder: {err}")
        else:
            self._finish(run_id, "Succeeded", [self._push(run_id, image) for image in built] if request.push else [])
        finally:
            self._tasks.pop(run_id, None)

    def _fail_interrupted(self) -> None:
        for run in self.store.children("run", self.id):
            if run["properties"]["status"] in ACTIVE:
                self._finish(run["name"], "Failed",
                             error=f"The emulator restarted while run {run['name']} was "
                                   f"{run['properties']['status']}; the run was stopped with it. Schedule it again.")

    # ---- images -----------------------------------------------------------------------------------

    def _push(self, run_id: str | None, image: BuiltImage) -> dict:
        """Hold ``image`` by digest (built by run ``run_id``, or imported: None); its tag moves to it from any
        other image of the repository."""
        repo, tag = image.repository.lower(), image.tag
        image_id = f"{self.id}/repositories/{repo}/manifests/{image.digest}"
        with self.store.transaction():
            for other in self.store.children("image", self.id):
                props = other["properties"]
                if props["repository"] == repo and tag in props["tags"] and other["id"].lower() != image_id.lower():
                    props["tags"].remove(tag)
                    self.store.put("image", self.id, other)
            held = self.store.get(image_id) or {"id": image_id, "name": f"{repo}@{image.digest}", "properties": {
                "repository": repo, "digest": image.digest, "tags": [], "engine": image.engine,
                "base": image.base, "runId": run_id, "pushedAt": resources.now_iso()}}
            held["properties"]["tags"] = sorted({*held["properties"]["tags"], tag})
            self.store.put("image", self.id, held)
        return {"registry": LOGIN_SERVER, "repository": repo, "tag": tag, "digest": image.digest}

    # ---- importImage (from the emulator's upstream) ---------------------------------------------

    async def import_image(self, body: dict, sub: str, rg: str, reg: str) -> Response:
        """Copy a public image (``repo:tag``, or ``repo@sha256:..`` that a tag of it points at) into this registry.
        Done at once: an empty 200, no digest (as on Azure: the digest is learned from the upstream's registry API).
        A source the upstream does not hold, or a tag NoForce may not move, is ACR's ``InvalidParameters`` error
        ([INF] ACR fails the operation; here the request answers it)."""
        registry_uri, source_image, targets, force = import_request(body)
        try:
            repo, tag, digest = self.upstream.resolve(registry_uri, source_image)
            targets = targets or [f"{repo}:{tag}"]  # [INF] az acr import's default: the source's own name
            if not force:
                self._check_no_force(targets, digest)
        except UpstreamError as err:
            raise rules.bad_request(f"Import of {source_image} from {registry_uri} failed: {err}",
                                    code="InvalidParameters") from None
        engine = BASE_ENGINES[repo]
        for target in targets:
            target_repo, _, target_tag = target.partition(":")
            self._push(None, BuiltImage(target_repo, target_tag, digest, engine, f"{repo}:{tag}@{digest}"))
        log.info("imported %s/%s:%s as %s (%s)", registry_uri, repo, tag, ", ".join(targets), digest)
        return Response(status_code=200)

    def _check_no_force(self, targets: list[str], digest: str) -> None:
        for target in targets:
            repo, _, tag = target.partition(":")
            held = self._tagged(repo.lower(), tag)
            if held is not None and held["properties"]["digest"] != digest:
                raise UpstreamError(f"Target tag {target} already exists with a different digest; "
                                    "use mode Force to overwrite it")

    def _tagged(self, repo: str, tag: str) -> dict | None:
        return next((held for held in self.store.children("image", self.id)
                     if held["properties"]["repository"] == repo and tag in held["properties"]["tags"]), None)

    def held_bases(self) -> dict[str, str]:
        """``<login server>/<repository>@<digest>`` -> engine for every image held: a build may start FROM one."""
        return {f"{LOGIN_SERVER}/{held['properties']['repository']}@{held['properties']['digest']}":
                held["properties"]["engine"] for held in self.store.children("image", self.id)}

    def engine_of(self, image: str) -> str | None:
        """The engine the build recorded for ``<login server>/repo[:tag][@digest]``, or None if not held."""
        repo, tag, digest = split_reference(image[len(LOGIN_SERVER) + 1:])
        for held in self.store.children("image", self.id):
            props = held["properties"]
            if props["repository"] == repo and (props["digest"] == digest if digest else (tag or "latest") in props["tags"]):
                return props["engine"]
        return None
