"""The emulator's builder on real tar.gz contexts: what builds, what digest it gets, and every way a
build fails as ACR's would (with the Dockerfile line), including unsafe archives and a cancelled build."""

from __future__ import annotations

import asyncio
import io
import re
import sys
import tarfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from emulator import builder
from emulator.builder import FAKE_ENGINE, VLLM_ENGINE, BuildFailed, BuiltImage

PIN = "@sha256:" + "ab" * 32
FAKE_BASE = f"r1emulator/fake-vllm-openai{PIN}"
REPO = Path(__file__).resolve().parent.parent
GOOD = f"""# syntax=docker/dockerfile:1
FROM {FAKE_BASE}
ENV A=1 \\
    # a comment inside a continuation
    B="two words"
COPY --chown=10001:10001 app/ /app/
ENTRYPOINT ["python3", "-m", "vllm.entrypoints.openai.api_server", "--port", "8000"]
"""


def tar_gz(files: dict[str, str | bytes], add: Callable[[tarfile.TarFile], None] | None = None,
           reverse: bool = False) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name in sorted(files, reverse=reverse):
            data = files[name].encode() if isinstance(files[name], str) else files[name]
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 0 if not reverse else 12345
            tar.addfile(info, io.BytesIO(data))
        if add:
            add(tar)
    return buffer.getvalue()


def context(dockerfile: str = GOOD, **extra: str) -> bytes:
    return tar_gz({"Dockerfile": dockerfile, "app/server.py": "print('hi')\n", **extra})


async def build(ctx: bytes, names: list[str] | None = None,
                dockerfile: str = "Dockerfile") -> tuple[list[BuiltImage], list[str]]:
    lines: list[str] = []
    images = await builder.build(ctx, dockerfile, names or ["r1-vllm:0123456789ab"], lines.append)
    return images, lines


async def failure(ctx: bytes, dockerfile: str = "Dockerfile") -> str:
    with pytest.raises(BuildFailed) as err:
        await build(ctx, dockerfile=dockerfile)
    message = str(err.value)
    assert "\n" not in message
    return message


async def test_a_good_build_on_the_fake_base_logs_steps_and_the_pushed_digest():
    images, lines = await build(context(), ["r1-vllm:0123456789ab", "team/r1-vllm"])
    digest = images[0].digest
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest)
    assert images == [BuiltImage("r1-vllm", "0123456789ab", digest, FAKE_ENGINE, FAKE_BASE),
                      BuiltImage("team/r1-vllm", "latest", digest, FAKE_ENGINE, FAKE_BASE)]
    steps = [line for line in lines if line.startswith("Step ")]
    assert steps == [f"Step 1/4 : FROM {FAKE_BASE}", 'Step 2/4 : ENV A=1 B="two words"',
                     "Step 3/4 : COPY --chown=10001:10001 app/ /app/",
                     'Step 4/4 : ENTRYPOINT ["python3", "-m", "vllm.entrypoints.openai.api_server", "--port", "8000"]']
    assert "Successfully pushed image: r1-vllm:0123456789ab" in lines
    assert "Successfully pushed image: team/r1-vllm:latest" in lines
    assert any(line.startswith(f"0123456789ab: digest: {digest} ") for line in lines)
    assert lines.index(steps[-1]) < lines.index("Successfully pushed image: r1-vllm:0123456789ab")


async def test_the_digest_follows_the_context_not_the_archive():
    first = (await build(context()))[0][0].digest
    repacked = tar_gz({"Dockerfile": GOOD, "app/server.py": "print('hi')\n"}, reverse=True)  # other order, mtime
    assert (await build(repacked))[0][0].digest == first
    changed = {
        "a Dockerfile line": context(GOOD.replace("A=1", "A=2")),
        "a file": tar_gz({"Dockerfile": GOOD, "app/server.py": "print('bye')\n"}),
        "a new file": context(**{"app/extra.txt": ""}),
        "the base digest": context(GOOD.replace(PIN, "@sha256:" + "cd" * 32)),
    }
    digests = {what: (await build(ctx))[0][0].digest for what, ctx in changed.items()}
    assert first not in digests.values() and len(set(digests.values())) == len(digests)


async def test_the_repositorys_dockerfile_on_the_vllm_base_runs_the_engine_build(monkeypatch):
    monkeypatch.setattr(builder, "ENGINE_BUILD_COMMAND",
                        [sys.executable, "-c", "import os, sys; print('engine ok in', os.getcwd()); "
                         "print('to stderr', file=sys.stderr)"])
    dockerfile = (REPO / "docker" / "Dockerfile").read_text()
    images, lines = await build(tar_gz({"Dockerfile": dockerfile}))
    assert images[0].engine == VLLM_ENGINE and images[0].base.startswith("vllm/vllm-openai@sha256:")
    first_from = next(i for i, line in enumerate(lines) if line.startswith("Step 1/"))
    assert lines[first_from + 1:first_from + 3] == [f"engine ok in {REPO}", "to stderr"]
    assert lines[first_from + 3].startswith("Step 2/")


async def test_a_failing_engine_build_fails_the_build(monkeypatch):
    monkeypatch.setattr(builder, "ENGINE_BUILD_COMMAND", [sys.executable, "-c", "print('no space'); raise SystemExit(3)"])
    ctx = context(GOOD.replace(FAKE_BASE, f"docker.io/vllm/vllm-openai:v0.8.5{PIN}"))
    lines: list[str] = []
    with pytest.raises(BuildFailed, match="exit code 3"):
        await builder.build(ctx, "Dockerfile", ["r1-vllm:1"], lines.append)
    assert "no space" in lines


def _proc_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


async def test_cancelling_a_build_kills_the_engine_build_and_its_children(monkeypatch):
    script = ("import os, subprocess, time; child = subprocess.Popen(['sleep', '60']); "
              "print('pids', os.getpid(), child.pid, flush=True); time.sleep(60)")
    monkeypatch.setattr(builder, "ENGINE_BUILD_COMMAND", [sys.executable, "-c", script])
    lines: list[str] = []
    task = asyncio.create_task(builder.build(context(GOOD.replace(FAKE_BASE, f"vllm/vllm-openai{PIN}")),
                                             "Dockerfile", ["r1-vllm:1"], lines.append))
    deadline = time.monotonic() + 20
    while not any(line.startswith("pids ") for line in lines):
        assert time.monotonic() < deadline and not task.done(), lines
        await asyncio.sleep(0.02)
    pids = [int(p) for p in next(line for line in lines if line.startswith("pids ")).split()[1:]]
    assert all(_proc_alive(pid) for pid in pids)
    task.cancel()
    await asyncio.wait({task}, timeout=5)  # not the engine's 60 s: cancelling does not wait for it
    assert task.cancelled()
    deadline = time.monotonic() + 5
    while any(_proc_alive(pid) for pid in pids):
        assert time.monotonic() < deadline, f"still running: {pids}"
        await asyncio.sleep(0.02)


GOOD_FORMS = {
    "shell form python3 -m": "ENTRYPOINT python3 -m vllm.entrypoints.openai.api_server --model \"$MODEL_PATH\"",
    "python -m via exec": 'CMD ["exec", "python", "-m", "vllm.entrypoints.openai.api_server"]',
    "vllm serve": 'ENTRYPOINT ["vllm", "serve", "/models/m"]',
    "sh -c": 'ENTRYPOINT ["/bin/sh", "-c", "VLLM_X=1 vllm serve $MODEL_PATH"]',
    "options for the base's entrypoint": 'CMD ["--port", "8000"]',
    "the base's own entrypoint": "EXPOSE 8000",
}


@pytest.mark.parametrize("last", GOOD_FORMS.values(), ids=GOOD_FORMS.keys())
async def test_entrypoints_that_run_vllms_openai_server_build(last):
    images, _ = await build(context(f"FROM {FAKE_BASE}\n{last}\n"))
    assert images[0].engine == FAKE_ENGINE


async def test_multi_stage_copy_from_a_stage_skips_the_context_and_the_final_base_counts():
    dockerfile = (f"FROM vllm/vllm-openai AS tools\nRUN make\nFROM tools AS mid\n"
                  f"FROM {FAKE_BASE} AS final\nCOPY --from=tools /opt/not-in-context /opt/\n"
                  "COPY app/*.py missing-dir/ /app/\n")
    assert (await failure(context(dockerfile))) == "Dockerfile:6: COPY source missing-dir/ not found in the build context"
    images, _ = await build(context(dockerfile.replace(" missing-dir/", "")))
    assert (images[0].engine, images[0].base) == (FAKE_ENGINE, FAKE_BASE)


FAILURES = {
    "FROM without argument": ("# c\nFROM\n", "Dockerfile:2: FROM requires at least one argument"),
    "FROM with two words": (f"FROM {FAKE_BASE} final\n", "Dockerfile:1: FROM requires either one or three arguments"),
    "ENV without value": (f"FROM {FAKE_BASE}\nRUN a \\\n  b\nENV ONLYKEY\n", "Dockerfile:4: ENV must have two arguments"),
    "unclosed quote": (f'FROM {FAKE_BASE}\nLABEL a="b\n', "Dockerfile:2: LABEL: No closing quotation"),
    "unknown instruction": (f"FROM {FAKE_BASE}\n\nFORM x\n", "Dockerfile:3: unknown instruction: FORM"),
    "unknown COPY flag": (f"FROM {FAKE_BASE}\nCOPY --own=1 app /app\n", "Dockerfile:2: COPY: unknown flag: own"),
    "COPY without destination": (f"FROM {FAKE_BASE}\nCOPY app\n", "Dockerfile:2: COPY requires at least two arguments"),
    "RUN before FROM": ("ARG V=1\nRUN x\nFROM x\n", "Dockerfile:2: RUN before the first FROM"),
    "no FROM": ("ARG V=1\n", "Dockerfile: no FROM instruction"),
    "unpinned FROM": ("FROM vllm/vllm-openai:latest\n", "Dockerfile:1: FROM vllm/vllm-openai:latest is not pinned by digest"),
    "pinned unknown base": (f"FROM ubuntu:22.04{PIN}\n", f"Dockerfile:1: base image ubuntu:22.04{PIN} not found"),
    "unknown build-stage base": (f"FROM busybox AS b\nFROM {FAKE_BASE}\n", "Dockerfile:1: base image busybox not found"),
    "missing COPY source": (f"FROM {FAKE_BASE}\nCOPY app/server.py nope.txt /app/\n",
                            "Dockerfile:2: COPY source nope.txt not found in the build context"),
    "ADD of a file outside the context": (f"FROM {FAKE_BASE}\nADD ../../etc/passwd /x\n",
                                          "Dockerfile:2: ADD source ../../etc/passwd not found in the build context"),
    "wrong ENTRYPOINT": (f'FROM {FAKE_BASE}\nENTRYPOINT ["python3", "app.py"]\nCMD ["--port", "1"]\n',
                         'Dockerfile:2: ENTRYPOINT ["python3", "app.py"] does not run vLLM\'s OpenAI server'),
    "wrong CMD": (f"FROM {FAKE_BASE}\nCMD python3 -m http.server\n", "Dockerfile:2: CMD python3 -m http.server does not run"),
}


@pytest.mark.parametrize(("dockerfile", "expected"), FAILURES.values(), ids=FAILURES.keys())
async def test_dockerfile_failures_name_the_line(dockerfile, expected):
    assert (await failure(context(dockerfile))).startswith(expected)


async def test_a_missing_or_escaping_dockerfile_path_fails():
    assert await failure(context(), "docker/Dockerfile") == "Dockerfile docker/Dockerfile not found in the build context"
    assert "not found" in await failure(context(), "../Dockerfile")


@pytest.mark.parametrize("name", ["", "R1-vllm:1", "r1-vllm:", "r1 vllm:1"])
async def test_invalid_image_names_fail(name):
    with pytest.raises(BuildFailed, match="image name"):
        await build(context(), [name])


def _member(name: str, kind: bytes = tarfile.REGTYPE, target: str = "") -> Callable[[tarfile.TarFile], None]:
    def add(tar: tarfile.TarFile) -> None:
        info = tarfile.TarInfo(name)
        info.type, info.linkname = kind, target
        tar.addfile(info, io.BytesIO(b""))
    return add


async def test_unsafe_archives_are_refused_and_nothing_lands_outside(tmp_path):
    escape = f"r1-escape-{uuid.uuid4().hex}"
    cases = {
        "traversal": (_member(f"../../../../../../tmp/{escape}"), "points outside the context"),
        "absolute path": (_member(f"/tmp/{escape}"), "points outside the context"),
        "symlink out of the tree": (_member("app/link", tarfile.SYMTYPE, "../../../etc/passwd"), "unsafe"),
        "absolute symlink": (_member("app/link", tarfile.SYMTYPE, "/etc/passwd"), "unsafe"),
        "hard link out of the tree": (_member("app/hard", tarfile.LNKTYPE, "../../etc/passwd"), "unsafe"),
        "device": (_member("app/dev", tarfile.CHRTYPE), "device"),
    }
    for what, (add, expected) in cases.items():
        ctx = tar_gz({"Dockerfile": GOOD, "app/server.py": ""}, add)
        assert expected in await failure(ctx), what
    assert not (Path("/tmp") / escape).exists()
    assert "not a readable tar.gz" in await failure(b"not a gzip at all")


async def test_a_symlink_inside_the_tree_is_fine_and_hashed_as_a_link():
    files = {"Dockerfile": GOOD, "app/server.py": ""}
    digests = [(await build(tar_gz(files, _member("app/alias", tarfile.SYMTYPE, target))))[0][0].digest
               for target in ("server.py", "./server.py")]
    assert digests[0] != digests[1]


async def test_oversized_archives_are_refused(monkeypatch):
    monkeypatch.setattr(builder, "MAX_UNPACKED_BYTES", 1000)
    assert "unpacks to more than 1000 bytes" in await failure(context(**{"app/big.bin": "x" * 1001}))
    monkeypatch.setattr(builder, "MAX_MEMBERS", 3)
    assert "more than 3 entries" in await failure(context(**{"a": "", "b": ""}))
