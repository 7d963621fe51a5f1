"""The emulator's blob listener, driven by the unmodified azure-storage-blob over HTTPS as the ACR
build path drives it: upload the context to a write SAS, read the run log (an append blob) by offset
until its metadata says Complete; and the refusals Azure Storage answers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import stat
import threading
import time
from collections.abc import Callable, Iterator
from urllib.parse import parse_qs, unquote, urlsplit

import httpx
import pytest
import uvicorn
from azure.core.exceptions import HttpResponseError
from azure.storage.blob import BlobClient
from starlette.applications import Starlette

from emulator import blobs
from emulator.blobs import BlobService
from emulator.certs import ensure_certificates
from emulator.layout import StateDir


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[tuple[BlobService, StateDir]]:
    """``BlobService.routes()`` on a loopback HTTPS uvicorn with the emulator's own certificates."""
    state = StateDir(tmp_path_factory.mktemp("blobs"))
    ensure_certificates(state)
    service = BlobService(state)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(
        Starlette(routes=service.routes()), ssl_certfile=str(state.server_cert), ssl_keyfile=str(state.server_key),
        log_level="warning", access_log=False, lifespan="off",
        # as emulator/server.py: an SDK response refused mid-flight keeps its TLS connection checked out
        timeout_graceful_shutdown=1))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "blob listener did not start"
        time.sleep(0.01)
    service.base_url = f"https://127.0.0.1:{sock.getsockname()[1]}"
    yield service, state
    server.should_exit = True
    thread.join(timeout=30)
    sock.close()


def http_client(state: StateDir) -> httpx.Client:
    return httpx.Client(verify=ssl.create_default_context(cafile=str(state.ca_cert)))


@pytest.fixture
def client(served) -> Iterator[Callable[[str], BlobClient]]:
    """The SDK's client for a SAS URL, as the product builds it; closed after the test."""
    _, state = served
    with contextlib.ExitStack() as stack:
        yield lambda url: stack.enter_context(
            BlobClient.from_blob_url(url, connection_verify=str(state.ca_cert), retry_total=0))


def test_upload_then_download_roundtrip_with_the_sdk(served, client):
    service, state = served
    data = bytes(range(256)) * 4096 + b"tail"  # 1 MiB + 4: more than one read buffer
    name = "source/2025010112/ctx.tar.gz"
    client(service.sas_url("source", name, "cw")).upload_blob(data, blob_type="BlockBlob", overwrite=True)
    reader = client(service.sas_url("source", name, "r"))
    assert reader.download_blob().readall() == data
    assert reader.get_blob_properties().size == len(data)
    assert service.read("source", name) == data
    files = [p for p in (state.blobs / "source").iterdir()]
    assert files and all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in files)


def test_overwrite_needs_write_not_just_create(served, client):
    service, state = served
    client(service.sas_url("source", "once", "c")).upload_blob(b"1", blob_type="BlockBlob", overwrite=True)
    with pytest.raises(HttpResponseError) as err:
        client(service.sas_url("source", "once", "c")).upload_blob(b"2", blob_type="BlockBlob", overwrite=True)
    assert err.value.status_code == 403 and err.value.error_code == "AuthenticationFailed"
    assert service.read("source", "once") == b"1"


def test_ranged_read_is_206_with_content_range_and_416_past_the_end(served, client):
    service, state = served
    service.create_append("logs", "ca1.log")
    service.append("logs", "ca1.log", b"0123456789")
    url = service.sas_url("logs", "ca1.log", "r")
    assert client(url).download_blob(offset=4).readall() == b"456789"
    with http_client(state) as http:
        partial = http.get(url, headers={"x-ms-range": "bytes=2-4"})
        assert partial.status_code == 206
        assert partial.headers["content-range"] == "bytes 2-4/10" and partial.content == b"234"
        assert http.get(url, headers={"Range": "bytes=8-"}).headers["content-range"] == "bytes 8-9/10"
        past = http.get(url, headers={"x-ms-range": "bytes=10-"})
        assert past.status_code == 416 and past.headers["x-ms-error-code"] == "InvalidRange"
        assert past.headers["content-range"] == "bytes */10"
        head = http.head(url)
        assert head.headers.get_list("content-length") == ["10"]
        assert head.headers["x-ms-blob-type"] == "AppendBlob" and head.headers["accept-ranges"] == "bytes"


def test_append_log_is_read_by_offset_until_complete_metadata(served, client):
    service, state = served
    service.create_append("logs", "ca2.log")
    reader = client(service.sas_url("logs", "ca2.log", "r"))
    props = reader.get_blob_properties()
    assert props.size == 0 and props.blob_type == "AppendBlob" and props.metadata == {}
    assert reader.download_blob().readall() == b""  # empty blob: the SDK's 416 fallback to a plain GET
    service.append("logs", "ca2.log", b"Step 1/2 : FROM x\n")
    seen = reader.download_blob(offset=0).readall()
    service.append("logs", "ca2.log", b"Successfully pushed image: r1-vllm:1\n")
    service.set_metadata("logs", "ca2.log", {"Complete": "Succeeded"})
    props = reader.get_blob_properties()
    seen += reader.download_blob(offset=len(seen)).readall()
    assert {k.lower(): v for k, v in props.metadata.items()} == {"complete": "Succeeded"}
    assert props.size == len(seen) and seen.endswith(b"r1-vllm:1\n")
    assert props.last_modified and props.creation_time and props.etag


def test_forged_expired_or_read_only_sas_is_403_authentication_failed(served, client):
    service, state = served
    good = service.sas_url("source", "guarded", "cw")
    parts = urlsplit(good)
    sig = parse_qs(parts.query)["sig"][0]
    tampered = good.replace("sp=cw", "sp=rcw")
    other_blob = good.replace("/guarded?", "/other?")
    for url in (tampered, other_blob, service.sas_url("source", "guarded", "cw", lifetime_s=-1),
                service.sas_url("source", "guarded", "r"), good.split("?")[0]):
        with pytest.raises(HttpResponseError) as err:
            client(url).upload_blob(b"x", blob_type="BlockBlob", overwrite=True)
        assert err.value.status_code == 403 and err.value.error_code == "AuthenticationFailed"
    with http_client(state) as http:
        refused = http.get(good.replace(sig.replace("+", "%2B").replace("/", "%2F").replace("=", "%3D"), "AAAA"))
    assert refused.status_code == 403 and refused.headers["x-ms-error-code"] == "AuthenticationFailed"
    assert refused.headers["content-type"].startswith("application/xml")
    assert "<Code>AuthenticationFailed</Code>" in refused.text and sig not in refused.text
    assert service.read("source", "guarded") is None


def test_upload_past_64_mib_is_413_before_the_body_is_read(served, client):
    service, state = served
    url = urlsplit(service.sas_url("source", "big", "cw"))
    head = (f"PUT {url.path}?{url.query} HTTP/1.1\r\nHost: {url.netloc}\r\nx-ms-blob-type: BlockBlob\r\n"
            f"Content-Length: {blobs.MAX_BLOCK_BLOB_BYTES + 1}\r\n\r\n")
    context = ssl.create_default_context(cafile=str(state.ca_cert))
    with socket.create_connection((url.hostname, url.port)) as raw, \
            context.wrap_socket(raw, server_hostname=url.hostname) as tls:
        tls.sendall(head.encode())
        answer = tls.recv(65536).decode()
    assert answer.startswith("HTTP/1.1 413") and "x-ms-error-code: RequestBodyTooLarge" in answer
    assert service.read("source", "big") is None


@pytest.mark.parametrize("path", ["a/%2e%2e/%2e%2e/%2e%2e/secrets/x", "%2e%2e%2fsecrets%2fx", "a//b", "a\\..\\b"])
def test_traversal_names_are_refused(served, client, path):
    """Percent-encoded so the client cannot normalise them away; refused before the SAS is even looked at."""
    service, state = served
    with pytest.raises(ValueError):
        service.sas_url("source", unquote(path), "cw")
    good = urlsplit(service.sas_url("source", "safe", "cw"))
    with http_client(state) as http:
        answer = http.put(f"{service.base_url}/{blobs.ACCOUNT}/source/{path}?{good.query}",
                          headers={"x-ms-blob-type": "BlockBlob"}, content=b"x")
    assert answer.status_code == 400 and answer.headers["x-ms-error-code"] == "InvalidResourceName"
    assert not (state.root / "secrets" / "x").exists()


@pytest.mark.parametrize("container", ["Source", "ab", "../x"])
def test_bad_container_names_are_refused(served, client, container):
    service, _ = served
    with pytest.raises(ValueError):
        service.sas_url(container, "blob", "r")


def test_no_query_string_or_signature_reaches_the_log(served, client, caplog):
    service, state = served
    caplog.set_level(logging.DEBUG)
    url = service.sas_url("source", "logged", "cw")
    client(url).upload_blob(b"data", blob_type="BlockBlob", overwrite=True)
    with pytest.raises(HttpResponseError):
        client(url.replace("sp=cw", "sp=r")).download_blob().readall()
    query = urlsplit(url).query
    sig = parse_qs(query)["sig"][0]
    # the client's own urllib3 logs the URL at DEBUG; what matters is what the emulator's side writes
    served_log = "\n".join(r.getMessage() for r in caplog.records if r.name.split(".")[0] in ("emulator", "uvicorn"))
    assert "refused" in served_log  # the refusal was logged, without its query
    assert sig not in served_log and "sig=" not in served_log and query not in served_log


def test_the_sas_key_is_private_and_survives_a_restart(served, client):
    service, state = served
    assert stat.S_IMODE(state.blob_sas_key.stat().st_mode) == 0o600
    again = BlobService(state)
    again.base_url = service.base_url
    url = again.sas_url("source", "restart", "cw")
    client(url).upload_blob(b"ok", blob_type="BlockBlob", overwrite=True)
    assert service.read("source", "restart") == b"ok"
