"""Benchmark the image build as the product runs it: a build of a new context (upload, ACR Tasks run, log
streamed, environment registered) against a reuse of the same context (one environment list), on the
emulator with the fake engine's base.

    .venv/bin/python bench/image_build.py [--rounds 5]

Prints median and max seconds for build and reuse over the rounds (a new context each round: a nonce file)
and their ratio (the baseline is the build in the same run), plus the log lines streamed per build.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from emulator import process  # noqa: E402
from tasks import clients  # noqa: E402
from tasks.image.build import build_or_reuse  # noqa: E402
from tasks.image.context import build_context  # noqa: E402
from tasks.plan.specs import render_dockerfile  # noqa: E402
from tasks.settings import load_settings  # noqa: E402

FAKE_BASE = "r1emulator/fake-vllm-openai@sha256:23078e0b29a648ff54da3b78fc10b23cf829192db3ed7a275e055d0261499dac"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="r1-bench-build-") as tmp:
        root = Path(tmp)
        base = load_settings(target="local", emulator_state_dir=root / "emulator", base_image=FAKE_BASE)
        clients.ensure_emulator(base)
        try:
            build_s, reuse_s, lines = [], [], []
            for i in range(args.rounds):
                folder = root / f"ctx{i}"
                folder.mkdir()
                (folder / "nonce.txt").write_text(str(i))
                (folder / "Dockerfile").write_text(render_dockerfile(base))
                s = base.model_copy(update={"dockerfile": folder / "Dockerfile"})
                ml, acr = clients.ml_client(s), clients.registry_client(s)
                for times in (build_s, reuse_s):
                    streamed: list[str] = []
                    started = time.perf_counter()
                    build_or_reuse(ml, acr, partial(clients.blob_client, s), s.workspace, build_context(s),
                                   s.image_build_timeout_s, streamed.append)
                    times.append(time.perf_counter() - started)
                    if times is build_s:
                        lines.append(len(streamed))
        finally:
            process.stop(root / "emulator")
    print(f"rounds: {args.rounds} (fake-engine base, local emulator)")
    for name, values in (("build (new context)", build_s), ("reuse (same context)", reuse_s)):
        print(f"{name:22s} median {statistics.median(values):6.3f} s   max {max(values):6.3f} s")
    print(f"reuse / build (median): {statistics.median(reuse_s) / statistics.median(build_s):.3f}")
    print(f"log lines streamed per build: {statistics.median(lines):.0f}")


if __name__ == "__main__":
    main()
