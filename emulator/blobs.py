"""The blob listener: the slice of Azure Blob Storage that the ACR Tasks build path needs, on loopback.

`az acr build` uploads the build context to a SAS URL and reads the run's log, an append blob, until
its metadata says ``Complete``. The registry hands out SAS URLs (``sas_url``), reads the uploaded
context (``read``) and writes the log (``create_append``, ``append``, ``set_metadata``); the unmodified
azure-storage-blob 12.31 talks to ``routes()``, path-style as it does for a ``127.0.0.1`` host:

    PUT  /{account}/{container}/{blob}?<sas>  x-ms-blob-type: BlockBlob, body <= 64 MiB  -> 201
    HEAD /{account}/{container}/{blob}?<sas>  properties, x-ms-meta-*                   -> 200
    GET  /{account}/{container}/{blob}?<sas>  [x-ms-range | Range: bytes=a-[b]]         -> 200 | 206 | 416

Every request needs a SAS this service signed (HMAC-SHA256, key in ``DIR/secrets/blob_sas_key``);
refusals are Azure Storage's XML ``<Error>`` with ``x-ms-error-code``. A blob's files are named by
the SHA-256 of its name, so no name reaches outside ``DIR/blobs/<container>``; names are validated
as well. Query strings are never logged: they carry the signature.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from email.utils import formatdate
from pathlib import Path
from urllib.parse import quote, urlencode
from xml.sax.saxutils import escape

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from emulator.layout import StateDir, write_private

ACCOUNT = "r1emulatorstore"
SAS_VERSION = "2021-08-06"
MAX_BLOCK_BLOB_BYTES = 64 * 1024 * 1024  # azure-storage-blob's max_single_put_size; bigger uploads use Put Block
MAX_BLOB_NAME = 1024
_EXPIRY_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
_CONTAINER = re.compile(r"(?=.{3,63}$)[a-z0-9]+(-[a-z0-9]+)*")
_RANGE = re.compile(r"bytes=(\d+)-(\d*)")
_META_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_META_VALUE = re.compile(r"[\x20-\x7e]*")
_PERMISSIONS = "rcw"
_AUTH_MESSAGE = ("Server failed to authenticate the request. Make sure the value of Authorization header "
                 "is formed correctly including the signature.")

log = logging.getLogger(__name__)


class StorageError(Exception):
    """A refusal in Azure Storage's shape: status, ``x-ms-error-code`` and an XML ``<Error>`` body."""

    def __init__(self, status: int, code: str, message: str, detail: str = "",
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.detail = status, code, message, detail
        self.headers = headers or {}

    def response(self, request: Request, request_id: str) -> Response:
        headers = {**_service_headers(request, request_id), **self.headers, "x-ms-error-code": self.code}
        if request.method == "HEAD":  # Azure answers HEAD errors with headers only; the SDK reads the code there
            return Response(status_code=self.status, headers=headers)
        detail = f"<AuthenticationErrorDetail>{escape(self.detail)}</AuthenticationErrorDetail>" if self.detail else ""
        body = (f'<?xml version="1.0" encoding="utf-8"?><Error><Code>{self.code}</Code>'
                f"<Message>{escape(self.message)}\nRequestId:{request_id}\nTime:{_iso_now()}</Message>"
                f"{detail}</Error>")
        return Response(body, status_code=self.status, headers=headers, media_type="application/xml")


@dataclass
class _Properties:
    """What Azure keeps beside a blob's bytes; stored as JSON next to the data file."""

    name: str
    blob_type: str  # "BlockBlob" | "AppendBlob"
    created: float
    modified: float
    etag: str
    metadata: dict[str, str] = field(default_factory=dict)
    committed_blocks: int = 0


def _iso_now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f0Z")


def _etag() -> str:
    return f'"0x{time.time_ns():X}"'


def _http_date(epoch: float) -> str:
    return formatdate(epoch, usegmt=True)


def _service_headers(request: Request, request_id: str) -> dict[str, str]:
    return {"x-ms-request-id": request_id, "x-ms-version": request.headers.get("x-ms-version", SAS_VERSION)}


def _auth_failed(detail: str) -> StorageError:
    return StorageError(403, "AuthenticationFailed", _AUTH_MESSAGE, detail)


def _invalid_name() -> StorageError:
    return StorageError(400, "InvalidResourceName", "The specified resource name contains invalid characters.")


def _valid_blob_name(blob: str) -> bool:
    """Azure's length limit, plus what a path-style URL and a file system cannot hold safely."""
    return (0 < len(blob) <= MAX_BLOB_NAME and "\\" not in blob
            and not any(ord(c) < 0x20 or ord(c) == 0x7F for c in blob)
            and all(part not in ("", ".", "..") for part in blob.split("/")))


def _check_names(container: str, blob: str) -> None:
    if not (_CONTAINER.fullmatch(container) and _valid_blob_name(blob)):
        raise ValueError(f"invalid container or blob name: {container!r}/{blob!r}")


def _write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` in one step with a 0600 file (mkstemp: concurrent writers never share a temp file)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _read_range(path: Path, start: int | None, end: int | None) -> tuple[bytes, int]:
    """Bytes ``start..end`` (inclusive, clipped) and the blob's size, from one open file so both agree."""
    with path.open("rb") as f:
        size = os.fstat(f.fileno()).st_size
        if start is None:
            return f.read(), size
        if start >= size:
            raise StorageError(416, "InvalidRange", "The range specified is invalid for the current size of the "
                               "resource.", headers={"Content-Range": f"bytes */{size}"})
        f.seek(start)
        last = size - 1 if end is None else min(end, size - 1)
        return f.read(last - start + 1), size


def _requested_range(request: Request) -> tuple[int | None, int | None]:
    """``x-ms-range`` wins over ``Range``, as in Azure; ``(None, None)`` for the whole blob."""
    value = request.headers.get("x-ms-range") or request.headers.get("range")
    if value is None:
        return None, None
    match = _RANGE.fullmatch(value.strip())
    if not match or (match[2] and int(match[2]) < int(match[1])):
        raise StorageError(400, "InvalidHeaderValue", "The value for one of the HTTP headers is not in the "
                           "correct format.")
    return int(match[1]), int(match[2]) if match[2] else None


async def _read_body(request: Request) -> bytes:
    """The upload, refused (413) past the cap: by Content-Length before a byte is read, else while reading."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BLOCK_BLOB_BYTES:
        raise _too_large()
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BLOCK_BLOB_BYTES:
            raise _too_large()
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large() -> StorageError:
    return StorageError(413, "RequestBodyTooLarge",
                        f"The request body is too large and exceeds the maximum permissible limit "
                        f"({MAX_BLOCK_BLOB_BYTES} bytes).")


class BlobService:
    """One storage account (``r1emulatorstore``) under ``DIR/blobs``; ``base_url`` is set once the listener is bound."""

    def __init__(self, state: StateDir) -> None:
        self.base_url = ""
        self._root = state.blobs
        if not state.blob_sas_key.exists():
            write_private(state.blob_sas_key, secrets.token_urlsafe(32).encode())
        self._key = state.blob_sas_key.read_bytes().strip()

    # ---- the registry's side ---------------------------------------------------------------------

    def sas_url(self, container: str, blob: str, permissions: str, lifetime_s: int = 3600) -> str:
        """A blob SAS URL on this listener granting ``permissions`` (letters of ``rcw``) for ``lifetime_s``."""
        _check_names(container, blob)
        if not permissions or set(permissions) - set(_PERMISSIONS):
            raise ValueError(f"SAS permissions must be letters of {_PERMISSIONS!r}, got {permissions!r}")
        if not self.base_url:
            raise RuntimeError("the blob listener is not bound yet (BlobService.base_url is empty)")
        sp = "".join(p for p in _PERMISSIONS if p in permissions)
        se = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=lifetime_s)).strftime(_EXPIRY_FORMAT)
        sig = self._signature(ACCOUNT, container, blob, sp, se, SAS_VERSION, "b")
        query = urlencode({"sv": SAS_VERSION, "sr": "b", "sp": sp, "se": se, "sig": sig}, quote_via=quote)
        return f"{self.base_url}/{ACCOUNT}/{container}/{quote(blob)}?{query}"

    def read(self, container: str, blob: str) -> bytes | None:
        """The blob's bytes, or None when it does not exist."""
        _check_names(container, blob)
        data, _ = self._paths(container, blob)
        try:
            return data.read_bytes()
        except FileNotFoundError:
            return None

    def create_append(self, container: str, blob: str) -> None:
        """An empty append blob (replacing any blob of that name, as Put Blob does)."""
        _check_names(container, blob)
        data, _ = self._paths(container, blob)
        _write_atomic(data, b"")
        now = time.time()
        self._save(container, blob, _Properties(blob, "AppendBlob", now, now, _etag()))

    def append(self, container: str, blob: str, data: bytes) -> None:
        """Append a block; FileNotFoundError when the blob does not exist, ValueError when it is not an append blob."""
        props = self._load(container, blob)
        if props.blob_type != "AppendBlob":
            raise ValueError(f"{container}/{blob} is a {props.blob_type}, not an AppendBlob")
        path, _ = self._paths(container, blob)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        with os.fdopen(fd, "ab") as f:
            f.write(data)
        props.modified, props.etag, props.committed_blocks = time.time(), _etag(), props.committed_blocks + 1
        self._save(container, blob, props)

    def set_metadata(self, container: str, blob: str, metadata: dict[str, str]) -> None:
        """Replace the blob's metadata (Set Blob Metadata replaces, it does not merge)."""
        for name, value in metadata.items():
            if not (_META_NAME.fullmatch(name) and _META_VALUE.fullmatch(value)):
                raise ValueError(f"invalid metadata {name!r}: names are C# identifiers, values printable ASCII")
        props = self._load(container, blob)
        props.metadata, props.modified, props.etag = dict(metadata), time.time(), _etag()
        self._save(container, blob, props)

    def routes(self) -> list[BaseRoute]:
        return [Route("/{account}/{container}/{blob:path}", self._handle, methods=["GET", "HEAD", "PUT"])]

    # ---- storage -----------------------------------------------------------------------------------

    def _paths(self, container: str, blob: str) -> tuple[Path, Path]:
        stem = self._root / container / hashlib.sha256(blob.encode()).hexdigest()
        return stem.with_suffix(".blob"), stem.with_suffix(".json")

    def _load(self, container: str, blob: str) -> _Properties:
        _check_names(container, blob)
        _, meta = self._paths(container, blob)
        return _Properties(**json.loads(meta.read_text()))

    def _save(self, container: str, blob: str, props: _Properties) -> None:
        _, meta = self._paths(container, blob)
        _write_atomic(meta, json.dumps(asdict(props)).encode())

    def _put_block_blob(self, container: str, blob: str, body: bytes) -> _Properties:
        data, _ = self._paths(container, blob)
        _write_atomic(data, body)
        now = time.time()
        props = _Properties(blob, "BlockBlob", now, now, _etag())
        self._save(container, blob, props)
        return props

    # ---- SAS -----------------------------------------------------------------------------------------

    def _signature(self, account: str, container: str, blob: str, sp: str, se: str, sv: str, sr: str) -> str:
        to_sign = "\n".join([sp, se, f"/blob/{account}/{container}/{blob}", sv, sr])
        return base64.b64encode(hmac.new(self._key, to_sign.encode(), hashlib.sha256).digest()).decode()

    def _authorize(self, request: Request, container: str, blob: str, allowed: str) -> None:
        """The SAS must be ours, for this blob, unexpired, and grant one of the ``allowed`` permissions."""
        q = request.query_params
        missing = [k for k in ("sv", "sr", "sp", "se", "sig") if not q.get(k)]
        if missing:
            raise _auth_failed(f"No valid shared access signature: {', '.join(missing)} missing.")
        expected = self._signature(request.path_params["account"], container, blob, q["sp"], q["se"], q["sv"], q["sr"])
        if not hmac.compare_digest(expected.encode(), q["sig"].encode()):
            raise _auth_failed("Signature did not match.")
        expiry = dt.datetime.strptime(q["se"], _EXPIRY_FORMAT).replace(tzinfo=dt.timezone.utc)
        now = dt.datetime.now(dt.timezone.utc)
        if now >= expiry:
            raise _auth_failed(f"Signed expiry time [{_http_date(expiry.timestamp())}] must be after "
                               f"current time [{_http_date(now.timestamp())}]")
        if not set(allowed) & set(q["sp"]):
            raise _auth_failed(f"The signature does not grant the permission this operation needs ({allowed}).")

    # ---- HTTP ----------------------------------------------------------------------------------------

    async def _handle(self, request: Request) -> Response:
        request_id = str(uuid.uuid4())
        container, blob = request.path_params["container"], request.path_params["blob"]
        try:
            if not (_CONTAINER.fullmatch(container) and _valid_blob_name(blob)):
                raise _invalid_name()
            if "comp" in request.query_params:
                raise StorageError(400, "InvalidQueryParameterValue", "This emulator serves Put Blob, Get Blob "
                                   "and Get Blob Properties only.")
            if request.method == "PUT":
                response = await self._put(request, container, blob)
            else:
                response = await self._get(request, container, blob)
        except StorageError as err:
            log.info("blob %s %s refused: %d %s", request.method, request.url.path, err.status, err.code)
            return err.response(request, request_id)
        response.headers.update(_service_headers(request, request_id))
        return response

    async def _put(self, request: Request, container: str, blob: str) -> Response:
        exists = self._paths(container, blob)[1].exists()
        self._authorize(request, container, blob, "w" if exists else "cw")
        blob_type = request.headers.get("x-ms-blob-type")
        if blob_type is None:
            raise StorageError(400, "MissingRequiredHeader", "An HTTP header that's mandatory for this request "
                               "is not specified: x-ms-blob-type.")
        if blob_type != "BlockBlob":
            raise StorageError(400, "InvalidHeaderValue", "This emulator accepts x-ms-blob-type BlockBlob only.")
        body = await _read_body(request)
        props = await anyio.to_thread.run_sync(self._put_block_blob, container, blob, body)
        log.debug("blob PUT %s: %d bytes", request.url.path, len(body))
        return Response(status_code=201, headers={"ETag": props.etag, "Last-Modified": _http_date(props.modified),
                                                  "x-ms-request-server-encrypted": "true"})

    async def _get(self, request: Request, container: str, blob: str) -> Response:
        self._authorize(request, container, blob, "r")
        try:
            props = self._load(container, blob)
        except FileNotFoundError:
            raise StorageError(404, "BlobNotFound", "The specified blob does not exist.") from None
        headers = self._property_headers(props)
        data_path, _ = self._paths(container, blob)
        if request.method == "HEAD":
            headers["Content-Length"] = str(data_path.stat().st_size)
            return Response(status_code=200, headers=headers)
        start, end = _requested_range(request)
        data, size = await anyio.to_thread.run_sync(_read_range, data_path, start, end)
        if start is None:
            return Response(data, status_code=200, headers=headers)
        headers["Content-Range"] = f"bytes {start}-{start + len(data) - 1}/{size}"
        return Response(data, status_code=206, headers=headers)

    @staticmethod
    def _property_headers(props: _Properties) -> dict[str, str]:
        headers = {
            "Content-Type": "application/octet-stream", "Accept-Ranges": "bytes", "ETag": props.etag,
            "Last-Modified": _http_date(props.modified), "x-ms-creation-time": _http_date(props.created),
            "x-ms-blob-type": props.blob_type, "x-ms-lease-state": "available", "x-ms-lease-status": "unlocked",
            "x-ms-server-encrypted": "true",
            **{f"x-ms-meta-{name}": value for name, value in props.metadata.items()},
        }
        if props.blob_type == "AppendBlob":
            headers["x-ms-blob-committed-block-count"] = str(props.committed_blocks)
        return headers
