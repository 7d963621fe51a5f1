"""The build context and its hash decide whether a build runs: same context, same hash and bytes; any change, new."""

from __future__ import annotations

import io
import logging
import tarfile
import gzip

import pytest

from tasks.image.build import LogTail, failure_reason
from tasks.redaction import URLLIB3_LOGGER, redact, redact_http_debug_log
from tasks.azureml.registry import RunState
from tasks.image.context import ContextError, base_image, build_context, tarball
from tasks.settings import load_settings
from tests.rollout_support import FAKE_BASE


def test_the_same_settings_give_the_same_hash_and_the_same_bytes():
    a, b = build_context(load_settings()), build_context(load_settings())
    assert a.hash == b.hash and tarball(a) == tarball(b)
    assert a.base_image == load_settings().base_image and len(a.tag) == 12


def test_a_changed_base_digest_or_dockerfile_line_is_a_new_context():
    default = build_context(load_settings())
    assert build_context(load_settings(base_image=FAKE_BASE)).hash != default.hash
    assert build_context(load_settings(model_supply="baked-in-image")).hash != default.hash  # adds a COPY line


def test_a_file_in_the_context_changes_the_hash(tmp_path):
    (tmp_path / "Dockerfile").write_text("FROM " + FAKE_BASE + "\n")
    before = build_context(load_settings(dockerfile=tmp_path / "Dockerfile"))
    (tmp_path / "extra.txt").write_text("x")
    after = build_context(load_settings(dockerfile=tmp_path / "Dockerfile"))
    assert before.hash != after.hash and set(after.files) == {"Dockerfile", "extra.txt"}
    (tmp_path / "extra.txt").write_text("y")
    assert build_context(load_settings(dockerfile=tmp_path / "Dockerfile")).hash != after.hash


def test_a_hand_written_dockerfile_is_uploaded_as_the_context_dockerfile(tmp_path):
    (tmp_path / "my.Dockerfile").write_text("FROM a@sha256:" + "1" * 64 + "\nFROM b@sha256:" + "2" * 64 + "\n")
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "run.sh").write_text("#!/bin/sh\n")
    ctx = build_context(load_settings(dockerfile=tmp_path / "my.Dockerfile"))
    assert set(ctx.files) == {"Dockerfile", "app/run.sh"}
    assert ctx.base_image == "b@sha256:" + "2" * 64  # the final stage's
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(tarball(ctx)))) as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == ["Dockerfile", "app/run.sh"]
        assert {(m.mtime, m.uid, m.mode) for m in members} == {(0, 0, 0o644)}
        assert tar.extractfile("Dockerfile").read() == ctx.files["Dockerfile"]


def test_a_missing_context_folder_is_an_input_error(tmp_path):
    with pytest.raises(ContextError, match="is not a folder"):
        build_context(load_settings(), docker_dir=tmp_path / "nope")


def test_base_image_reads_flags_and_case():
    assert base_image("from --platform=linux/amd64 x/y@sha256:ab AS build\nRUN true\n") == "x/y@sha256:ab"
    assert base_image("RUN true\n") == ""


def test_the_log_tail_yields_whole_lines_and_keeps_the_last_ones():
    tail = LogTail()
    assert tail.feed(b"Step 1/2 : FROM x\nStep 2/2 : RU") == ["Step 1/2 : FROM x"]
    assert tail.feed(b"N true\n") == ["Step 2/2 : RUN true"]
    assert tail.feed(b"no newline at the end", final=True) == ["no newline at the end"]
    assert tail.feed(b"last, then the log completes") == []
    assert tail.feed(b"", final=True) == ["last, then the log completes"]  # no new bytes: still flushed
    for i in range(30):
        tail.feed(f"line {i}\n".encode())
    assert list(tail.last)[-1] == "line 29" and len(tail.last) == 20


def test_a_failure_names_the_dockerfile_line_else_the_run_error():
    run = RunState("ca7", "Failed", None, None, "The build failed.")
    assert failure_reason(run, ["Step 1/3 : FROM x", "Dockerfile:3: unknown instruction: FORM", "x"]) == (
        "image build run ca7 failed: Dockerfile:3: unknown instruction: FORM")
    assert failure_reason(run, ["Step 1/3 : FROM x"]) == "image build run ca7 failed: The build failed."


def test_redact_drops_sas_query_strings():
    text = "GET https://127.0.0.1:1/acct/logs/ca1.log?sv=2021-08-06&sp=r&sig=abc%2Fdef= failed"
    assert redact(text) == "GET https://127.0.0.1:1/acct/logs/ca1.log?<redacted> failed"


def test_urllib3_request_lines_lose_their_query_before_any_handler(caplog):
    caplog.set_level(logging.DEBUG, logger=URLLIB3_LOGGER)
    redact_http_debug_log()
    redact_http_debug_log()  # idempotent
    logging.getLogger(URLLIB3_LOGGER).debug('%s://%s:%s "%s %s %s" %s %s', "https", "127.0.0.1", 1, "GET",
                                             "/acct/logs/ca1.log?sv=1&sig=SECRET%3D", "HTTP/1.1", 206, 3)
    assert "SECRET" not in caplog.text and '"GET /acct/logs/ca1.log?<redacted> HTTP/1.1" 206 3' in caplog.text
