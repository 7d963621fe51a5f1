"""Build the serving image with ACR Tasks, or reuse the build of the same context: one path on Azure and locally.

Order (what ``az acr build`` does, then the seed's environment): look for an environment version tagged
with the context's hash (found: reuse its digest, no run); else upload the context, schedule a
``DockerBuildRequest``, stream the run's log into ours until its blob says ``Complete``, cancel the run if
it outlives ``R1_IMAGE_BUILD_TIMEOUT_S``, and register ``r1-vllm:<n>`` pinned to the digest the run reported.
A failure names what failed (the Dockerfile line, the base image, the timeout) and keeps the log's last lines.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from azure.core.exceptions import AzureError
from pydantic import SecretStr

from tasks.azureml import environment, registry
from tasks.image.context import REPOSITORY, BuildContext, build_context, tarball
from tasks.redaction import redact
from tasks.reports import run_logger
from tasks.settings import Settings

POLL_S = 0.5
COMPLETE_GRACE_S = 10.0  # after the run ends, how long its log may take to say Complete
TAIL_LINES = 20
_DOCKERFILE_LINE = re.compile(r"Dockerfile:\d+")

BlobOpener = Callable[[SecretStr], Any]  # a SAS URL -> azure-storage-blob BlobClient


@dataclass(frozen=True)
class ImageBuild:
    image: str  # <loginServer>/<repository>@sha256:...
    environment: str  # r1-vllm:<version>
    built: bool  # False: a build of the same context was reused
    context_hash: str
    run_id: str | None
    seconds: float

    def summary(self) -> dict[str, Any]:
        """What ``python -m flows.build_image --json`` prints and the rollout report keeps."""
        return {"image": self.image, "environment": self.environment, "built": self.built,
                "context_hash": self.context_hash, "run_id": self.run_id, "seconds": round(self.seconds, 1)}

    def line(self) -> str:
        how = f"built in run {self.run_id}" if self.built else "reused (same build context)"
        return f"{self.image} {how}; environment {self.environment}; {self.seconds:.1f} s"


class ImageBuildFailed(RuntimeError):
    """The build ran and failed, timed out or could not be run; the message says which, ``log_tail`` shows it."""

    report_dir: str | None = None

    def __init__(self, message: str, run_id: str | None = None, log_tail: list[str] | None = None):
        super().__init__(message)
        self.run_id, self.log_tail = run_id, list(log_tail or [])


@dataclass
class LogTail:
    """Bytes of a growing log in, whole lines out; keeps the last lines for a failure report."""

    pending: bytes = b""
    last: deque[str] = field(default_factory=lambda: deque(maxlen=TAIL_LINES))

    def feed(self, data: bytes, final: bool = False) -> list[str]:
        *lines, self.pending = (self.pending + data).split(b"\n")
        if final and self.pending:
            lines, self.pending = [*lines, self.pending], b""
        text = [raw.decode(errors="replace").rstrip("\r") for raw in lines]
        self.last.extend(text)
        return text


def _first_line(err: Exception) -> str:
    return (str(err).splitlines() or [type(err).__name__])[0]


def failure_reason(state: registry.RunState, tail: list[str]) -> str:
    """The Dockerfile line the log names, else the run's own error message, else its status."""
    named = next((line.strip() for line in tail if _DOCKERFILE_LINE.search(line)), None)
    why = named or state.error or "no error message"
    return f"image build run {state.run_id} {state.status.lower()}: {why}"


def build_from_settings(ml: Any, acr: Any, open_blob: BlobOpener, s: Settings) -> ImageBuild:
    """docker/ (or ``R1_DOCKERFILE``) built or reused, the build's log in the run's log."""
    return build_or_reuse(ml, acr, open_blob, s.workspace, build_context(s), s.image_build_timeout_s,
                          run_logger("r1.image").info)


def build_or_reuse(ml: Any, acr: Any, open_blob: BlobOpener, workspace: str, ctx: BuildContext, timeout_s: float,
                   log: Callable[[str], None], clock: Callable[[], float] = time.monotonic) -> ImageBuild:
    started = clock()
    found = environment.find_build(ml, ctx.hash)
    if found:
        return ImageBuild(found.image, found.reference, False, ctx.hash, None, clock() - started)
    try:
        reg = registry.workspace_registry(ml, acr, workspace)
        url, source = registry.upload_url(acr, reg)
        open_blob(url).upload_blob(tarball(ctx), blob_type="BlockBlob", overwrite=True)
        run_id = registry.schedule_build(acr, reg, source, f"{REPOSITORY}:{ctx.tag}", timeout_s)
    except (AzureError, LookupError) as err:
        raise ImageBuildFailed(f"could not start the image build: {redact(_first_line(err))}") from None
    log(f"image build run {run_id} in {reg.login_server}: {REPOSITORY}:{ctx.tag} from {ctx.base_image}")
    state, tail = _follow(acr, open_blob, reg, run_id, started + timeout_s, log, clock)
    if state is None:
        with contextlib.suppress(AzureError):  # a run that cannot be cancelled ends at its own (later) timeout
            registry.cancel_run(acr, reg, run_id)
        raise ImageBuildFailed(f"image build run {run_id} did not finish within R1_IMAGE_BUILD_TIMEOUT_S="
                               f"{timeout_s:g} s and was cancelled", run_id, tail)
    if state.status != "Succeeded" or not state.digest:
        raise ImageBuildFailed(failure_reason(state, tail), run_id, tail)
    image = f"{reg.login_server}/{state.repository or REPOSITORY}@{state.digest}"
    registered = environment.register(ml, image, {environment.CONTEXT_HASH_TAG: ctx.hash,
                                                  "base_image": ctx.base_image, "build_run": run_id})
    return ImageBuild(image, registered.reference, True, ctx.hash, run_id, clock() - started)


def _follow(acr: Any, open_blob: BlobOpener, reg: registry.Registry, run_id: str, deadline: float,
            log: Callable[[str], None], clock: Callable[[], float]) -> tuple[registry.RunState | None, list[str]]:
    """Stream the run's log until it is complete; (the final run state, the last lines), or (None, ...) on timeout."""
    tail, offset, ended_at = LogTail(), 0, None
    blob = None
    while True:
        state = registry.run_state(acr, reg, run_id)
        try:
            blob = blob or open_blob(registry.log_url(acr, reg, run_id))
            props = blob.get_blob_properties()
            complete = any(k.lower() == "complete" for k in props.metadata or {})
            data = blob.download_blob(offset=offset, length=props.size - offset).readall() \
                if props.size > offset else b""
            offset += len(data)
            for line in tail.feed(data, final=complete):  # complete: a last line without a newline counts too
                log(line)
        except AzureError:  # the log is not there yet, or a blip: the run's state still decides
            complete = False
        if state.final:
            ended_at = ended_at or clock()
            if complete or clock() - ended_at > COMPLETE_GRACE_S:
                return state, list(tail.last)
        elif clock() > deadline:
            return None, list(tail.last)
        time.sleep(POLL_S)
