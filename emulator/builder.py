"""The registry's builder: an ACR Tasks docker build, done for real on the uploaded context, without Docker.

The rollout pins deployments to the digest the build reports, so the builder must fail where ACR
fails and give a digest that follows the context: it unpacks the tar.gz safely, parses the
Dockerfile (a syntax error, an unknown instruction, an unpinned or unknown base, a missing COPY
source or an ENTRYPOINT the base cannot run fails with ``Dockerfile:<line>: ...``), and derives the
digest from the base reference and the context's files. The base decides the engine that serves
the image (a copy the registry imported runs on its upstream repository's engine); for vLLM's base the build makes the real engine (``python -m emulator.engines.vllm build``),
its output streamed into the run log. RUN steps are logged, not executed.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import hashlib
import io
import json
import os
import posixpath
import re
import shlex
import signal
import sys
import tarfile
import tempfile
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

VLLM_ENGINE = "emulator.engines.vllm"
FAKE_ENGINE = "emulator.engines.fake"
BASE_ENGINES = {"vllm/vllm-openai": VLLM_ENGINE, "r1emulator/fake-vllm-openai": FAKE_ENGINE}
# Module-level so tests can put a quick or slow command in its place.
ENGINE_BUILD_COMMAND = [sys.executable, "-m", "emulator.engines.vllm", "build"]
REPOSITORY_ROOT = Path(__file__).resolve().parent.parent
MAX_MEMBERS = 10_000
MAX_UNPACKED_BYTES = 512 * 1024 * 1024
INSTRUCTIONS = frozenset({"ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM", "HEALTHCHECK",
                          "LABEL", "MAINTAINER", "ONBUILD", "RUN", "SHELL", "STOPSIGNAL", "USER", "VOLUME", "WORKDIR"})
COPY_FLAGS = frozenset({"--chown", "--chmod", "--from", "--link", "--parents", "--exclude", "--checksum",
                        "--keep-git-dir"})
_PINNED = re.compile(r"[^@\s]+@sha256:[0-9a-f]{64}")
_PYTHON = re.compile(r"python(3(\.\d+)?)?")
_COMPONENT = r"[a-z0-9]+(?:[._-][a-z0-9]+)*"
_IMAGE_NAME = re.compile(rf"(?P<repository>{_COMPONENT}(?:/{_COMPONENT})*)"
                         r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?")
_MAX_LOG_LINE = 64 * 1024
_VLLM_SERVER = "vLLM's OpenAI server (python3 -m vllm.entrypoints.openai.api_server ... or vllm serve ...)"


@dataclass(frozen=True)
class BuiltImage:
    repository: str
    tag: str
    digest: str  # "sha256:<64 hex>"
    engine: str  # "emulator.engines.vllm" | "emulator.engines.fake"
    base: str  # the FROM reference


class BuildFailed(Exception):
    """A build the run reports as Failed; ``str()`` is one line, naming the Dockerfile line when it is one."""


@dataclass(frozen=True)
class _Instruction:
    line: int  # the first physical line of a continued instruction
    keyword: str  # upper case
    args: str

    def fail(self, message: str) -> BuildFailed:
        return BuildFailed(f"Dockerfile:{self.line}: {message}")


@dataclass(frozen=True)
class _Plan:
    steps: list[_Instruction]
    base: _Instruction  # the FROM of the image the final stage builds on
    engine: str
    digest: str
    size: int  # unpacked bytes, for the push line


# ---- the archive -----------------------------------------------------------------------------------

def _checked_members(tar: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    """Members one at a time, refused before extraction past the caps or when they could leave the tree.
    (Links pointing out of the tree are refused by tarfile's ``data`` filter.)"""
    count = size = 0
    for member in tar:
        count += 1
        size += member.size if member.isreg() else 0
        if count > MAX_MEMBERS:
            raise BuildFailed(f"the build context has more than {MAX_MEMBERS} entries")
        if size > MAX_UNPACKED_BYTES:
            raise BuildFailed(f"the build context unpacks to more than {MAX_UNPACKED_BYTES} bytes")
        if member.name.startswith("/") or ".." in PurePosixPath(member.name).parts:
            raise BuildFailed(f"the build context entry {member.name!r} points outside the context")
        if member.ischr() or member.isblk() or member.isfifo():
            raise BuildFailed(f"the build context entry {member.name!r} is a device or fifo")
        yield member


def _unpack(context: bytes, dest: Path) -> None:
    try:
        with tarfile.open(fileobj=io.BytesIO(context), mode="r:gz") as tar:
            tar.extractall(dest, members=_checked_members(tar), filter="data")
    except tarfile.FilterError as err:
        raise BuildFailed(f"the build context archive is unsafe: {err}") from None
    except (tarfile.TarError, OSError, EOFError, zlib.error) as err:
        raise BuildFailed(f"the build context is not a readable tar.gz: {err}") from None


def _tree(root: Path) -> tuple[list[str], set[str]]:
    """The context's files (symlinks included, not followed), sorted, and every path in it (dirs too)."""
    files, paths = [], set()
    for dirpath, dirnames, filenames in os.walk(root):
        rel = Path(dirpath).relative_to(root).as_posix()
        for name in dirnames + filenames:
            path = name if rel == "." else f"{rel}/{name}"
            paths.add(path)
            if name in filenames or os.path.islink(os.path.join(dirpath, name)):
                files.append(path)
    return sorted(files), paths


def _framed(data: bytes) -> bytes:
    return len(data).to_bytes(8, "big") + data


def _digest(base: str, dockerfile_path: str, root: Path, files: list[str]) -> str:
    """sha256 over the base reference, the Dockerfile's path and every file (path + content), length-framed."""
    h = hashlib.sha256(_framed(base.encode()) + _framed(dockerfile_path.encode()))
    for rel in files:
        path = root / rel
        h.update(_framed(rel.encode()))
        h.update(_framed(os.readlink(path).encode() if path.is_symlink() else path.read_bytes()))
    return f"sha256:{h.hexdigest()}"


# ---- the Dockerfile ----------------------------------------------------------------------------------

def _instructions(text: str) -> list[_Instruction]:
    """Logical instructions: comments and blank lines dropped (inside continuations too), ``\\`` joined."""
    result: list[_Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if not pending:
            start = number
        pending.append(stripped.removesuffix("\\").strip())
        if not stripped.endswith("\\"):
            result.append(_instruction(start, " ".join(pending)))
            pending = []
    if pending:
        result.append(_instruction(start, " ".join(pending)))
    return result


def _instruction(line: int, logical: str) -> _Instruction:
    word, _, args = logical.partition(" ")
    instruction = _Instruction(line, word.upper(), args.strip())
    if instruction.keyword not in INSTRUCTIONS:
        raise instruction.fail(f"unknown instruction: {word}")
    _check_syntax(instruction)
    return instruction


def _words(instruction: _Instruction) -> list[str]:
    try:
        return shlex.split(instruction.args)
    except ValueError as err:
        raise instruction.fail(f"{instruction.keyword}: {err}") from None


def _check_syntax(instruction: _Instruction) -> None:
    kw = instruction.keyword
    if not instruction.args:
        raise instruction.fail(f"{kw} requires at least one argument")
    if kw == "FROM":
        _from_parts(instruction)
    elif kw in ("ENV", "LABEL"):
        _check_pairs(instruction)
    elif kw in ("COPY", "ADD"):
        _copy_operands(instruction)


def _from_parts(instruction: _Instruction) -> tuple[str, str | None]:
    """``FROM [--platform=..] ref [AS name]`` -> (ref, lower-case stage name or None)."""
    words = [w for w in instruction.args.split() if not w.startswith("--")]
    if len(words) == 1:
        return words[0], None
    if len(words) == 3 and words[1].lower() == "as":
        return words[0], words[2].lower()
    raise instruction.fail("FROM requires either one or three arguments")


def _check_pairs(instruction: _Instruction) -> None:
    """``KEY=VALUE ...``, or ENV's legacy ``KEY VALUE``."""
    words = _words(instruction)
    if instruction.keyword == "ENV" and "=" not in words[0]:
        if len(words) < 2:
            raise instruction.fail("ENV must have two arguments")
        return
    for word in words:
        if "=" not in word or word.startswith("="):
            raise instruction.fail(f"{instruction.keyword}: syntax error - can't find = in {word!r}. "
                                   "Must be of the form: name=value")


def _exec_or_shell(args: str) -> list[str] | None:
    """The JSON (exec) form as a list, or None for the shell form (as Docker: invalid JSON is shell form)."""
    if not args.startswith("["):
        return None
    try:
        parsed = json.loads(args)
    except ValueError:
        return None
    return parsed if isinstance(parsed, list) and all(isinstance(p, str) for p in parsed) else None


def _copy_operands(instruction: _Instruction) -> tuple[dict[str, str], list[str]]:
    """``COPY [--flag=value ...] src... dest`` -> (flags, [src..., dest]); unknown flags are syntax errors."""
    words = instruction.args.split()
    flags: dict[str, str] = {}
    while words and words[0].startswith("--"):
        name, _, value = words.pop(0).partition("=")
        if name not in COPY_FLAGS:
            raise instruction.fail(f"{instruction.keyword}: unknown flag: {name.removeprefix('--')}")
        flags[name] = value
    operands = _exec_or_shell(" ".join(words)) or words
    if len(operands) < 2:
        raise instruction.fail(f"{instruction.keyword} requires at least two arguments, but only one was "
                               "provided. Destination could not be determined.")
    return flags, operands


# ---- checks against the context and the bases --------------------------------------------------------

def _repository(ref: str) -> str:
    """``docker.io/vllm/vllm-openai:v1@sha256:..`` -> ``vllm/vllm-openai`` (the key of BASE_ENGINES)."""
    name = ref.split("@", 1)[0]
    if name.rfind(":") > name.rfind("/"):
        name = name[:name.rfind(":")]
    return name.lower().removeprefix("docker.io/")


def _stage_bases(steps: list[_Instruction]) -> dict[_Instruction, _Instruction]:
    """Each FROM -> the FROM of the image its stage builds on (``FROM <earlier stage>`` inherits that
    stage's); the last entry is the final stage's."""
    named: dict[str, _Instruction] = {}
    bases: dict[_Instruction, _Instruction] = {}
    for step in steps:
        if step.keyword == "FROM":
            ref, name = _from_parts(step)
            bases[step] = named.get(ref.lower(), step)
            if name:
                named[name] = bases[step]
        elif not bases and step.keyword != "ARG":
            raise step.fail(f"{step.keyword} before the first FROM (only ARG may come first)")
    if not bases:
        raise BuildFailed("Dockerfile: no FROM instruction")
    return bases


def _held_key(ref: str) -> str:
    """``host/repo[:tag]@sha256:..`` -> ``host/repo@sha256:..`` (a digest names the image; the tag is a label)."""
    name, _, digest = ref.lower().partition("@")
    return f"{_repository(name)}@{digest}"


def _base_engine(step: _Instruction, final_base: _Instruction, held: Mapping[str, str]) -> str:
    """The engine a base runs on: a public base by its repository, a registry's own copy by what it holds."""
    ref, _ = _from_parts(step)
    if step is final_base and not _PINNED.fullmatch(ref):
        raise step.fail(f"FROM {ref} is not pinned by digest (@sha256:<64 hex>)")
    engine = BASE_ENGINES.get(_repository(ref)) or (held.get(_held_key(ref)) if "@" in ref else None)
    if engine is None:
        raise step.fail(f"base image {ref} not found")
    return engine


def _check_sources(step: _Instruction, paths: set[str]) -> None:
    """Every source is in the context (``--from`` copies from a stage; ADD may fetch a URL)."""
    flags, operands = _copy_operands(step)
    if "--from" in flags:
        return
    for source in operands[:-1]:
        if step.keyword == "ADD" and re.match(r"(https?|git)://|git@", source):
            continue
        rel = posixpath.normpath("/" + source).lstrip("/")  # the context is "/": a source cannot climb out
        depth = rel.count("/")
        found = not rel or rel in paths or (any(c in rel for c in "*?[") and any(
            fnmatch.fnmatchcase(p, rel) and p.count("/") == depth for p in paths))
        if not found:
            raise step.fail(f"{step.keyword} source {source} not found in the build context")


def _argv(args: str) -> list[str]:
    exec_form = _exec_or_shell(args)
    if exec_form is not None:
        return exec_form
    try:
        return shlex.split(args)
    except ValueError:
        return args.split()


def _runs_vllm_server(argv: list[str]) -> bool:
    while argv and (argv[0] in ("exec", "env", "/usr/bin/env") or re.fullmatch(r"\w+=.*", argv[0])):
        argv = argv[1:]
    if not argv:
        return False
    program = posixpath.basename(argv[0])
    if program in ("sh", "bash") and len(argv) >= 3 and argv[1] == "-c":
        return _runs_vllm_server(_argv(argv[2]))
    if _PYTHON.fullmatch(program):
        return argv[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]
    return program == "vllm" and argv[1:2] == ["serve"]


def _check_command(final_stage: list[_Instruction]) -> None:
    """The image's ENTRYPOINT (else CMD) must start vLLM's OpenAI server; with neither, or with a CMD of
    only options, the base's own entrypoint (that server) runs."""
    entrypoint = next((s for s in reversed(final_stage) if s.keyword == "ENTRYPOINT"), None)
    cmd = next((s for s in reversed(final_stage) if s.keyword == "CMD"), None)
    command = entrypoint or cmd
    if command is None:
        return
    argv = _argv(command.args)
    if command is cmd and argv and argv[0].startswith("-"):
        return
    if not _runs_vllm_server(argv):
        raise command.fail(f"{command.keyword} {command.args} does not run {_VLLM_SERVER}")


def _final_stage(steps: list[_Instruction]) -> list[_Instruction]:
    last_from = max(i for i, s in enumerate(steps) if s.keyword == "FROM")
    return steps[last_from:]


def _read_dockerfile(root: Path, dockerfile_path: str) -> str:
    path = (root / dockerfile_path).resolve()
    if not path.is_relative_to(root.resolve()) or not path.is_file():
        raise BuildFailed(f"Dockerfile {dockerfile_path} not found in the build context")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise BuildFailed(f"Dockerfile {dockerfile_path} is not UTF-8 text") from None


def _plan(context: bytes, dockerfile_path: str, held: Mapping[str, str]) -> _Plan:
    """Everything that reads the context (blocking: run in a thread); the temp tree is gone on return."""
    with tempfile.TemporaryDirectory(prefix="r1-build-") as tmp:
        root = Path(tmp)
        _unpack(context, root)
        steps = _instructions(_read_dockerfile(root, dockerfile_path))
        files, paths = _tree(root)
        bases = _stage_bases(steps)
        final_base = list(bases.values())[-1]
        engines = {}
        for step in steps:
            if bases.get(step) is step:  # a FROM naming an image, not an earlier stage
                engines[step] = _base_engine(step, final_base, held)
            elif step.keyword in ("COPY", "ADD"):
                _check_sources(step, paths)
        _check_command(_final_stage(steps))
        base_ref = _from_parts(final_base)[0]
        size = sum((root / f).lstat().st_size for f in files)
        return _Plan(steps, final_base, engines[final_base],
                     _digest(base_ref, dockerfile_path, root, files), size)


# ---- the build ---------------------------------------------------------------------------------------

def _image_names(image_names: list[str]) -> list[tuple[str, str]]:
    if not image_names:
        raise BuildFailed("no image names to build")
    names = []
    for name in image_names:
        match = _IMAGE_NAME.fullmatch(name)
        if not match:
            raise BuildFailed(f"invalid image name {name!r}: expected repository[:tag]")
        names.append((match["repository"], match["tag"] or "latest"))
    return names


def _text(line: bytes) -> str:
    return line.decode("utf-8", "replace").rstrip("\r")


async def _stream_lines(stream: asyncio.StreamReader, log: Callable[[str], None]) -> None:
    """Each output line to ``log``; a line longer than 64 KiB is cut rather than held."""
    pending = b""
    while chunk := await stream.read(65536):
        *lines, pending = (pending + chunk).split(b"\n")
        for line in lines:
            log(_text(line))
        if len(pending) > _MAX_LOG_LINE:
            log(_text(pending))
            pending = b""
    if pending:
        log(_text(pending))


async def _build_engine(log: Callable[[str], None]) -> None:
    """Run the engine build with its output in the log; a cancelled build kills it and what it started."""
    process = await asyncio.create_subprocess_exec(
        *ENGINE_BUILD_COMMAND, cwd=REPOSITORY_ROOT, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, start_new_session=True)
    try:
        assert process.stdout is not None
        await _stream_lines(process.stdout, log)
        code = await process.wait()
    finally:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # its own session: pip and friends go too
            await process.wait()
    if code != 0:
        raise BuildFailed(f"the vLLM engine build failed (exit code {code}); its output is in the log")


async def build(context: bytes, dockerfile_path: str, image_names: list[str],
                log: Callable[[str], None], held: Mapping[str, str] | None = None) -> list[BuiltImage]:
    """Build ``context`` (a tar.gz) as ACR Tasks would; BuildFailed names what failed. ``held``: the images of
    the registry the build runs in (``<login server>/<repository>@<digest>`` -> engine), bases it may use."""
    names = _image_names(image_names)
    log("Downloading source code...")
    plan = await asyncio.to_thread(_plan, context, dockerfile_path, held or {})
    log("Finished downloading source code")
    for number, step in enumerate(plan.steps, 1):
        log(f"Step {number}/{len(plan.steps)} : {step.keyword} {step.args}")
        if step is plan.base and plan.engine == VLLM_ENGINE:
            await _build_engine(log)
    base = _from_parts(plan.base)[0]
    images = [BuiltImage(repository, tag, plan.digest, plan.engine, base) for repository, tag in names]
    log(f"Successfully built {plan.digest.removeprefix('sha256:')[:12]}")
    for image in images:
        log(f"Successfully tagged {image.repository}:{image.tag}")
    for image in images:
        log(f"Pushing image: {image.repository}:{image.tag}, attempt 1")
        log(f"{image.tag}: digest: {image.digest} size: {plan.size}")
        log(f"Successfully pushed image: {image.repository}:{image.tag}")
    return images
