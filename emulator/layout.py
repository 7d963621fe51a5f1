"""Where the emulator keeps things inside its state dir; the client factory reads the same names."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path


def _under(relative: str, doc: str = "") -> property:
    return property(lambda self: self.root / relative, doc=doc or None)


@dataclass(frozen=True)
class StateDir:
    root: Path

    connection = _under("connection.json")
    ca_cert = _under("tls/ca.pem")
    ca_key = _under("tls/ca.key")
    server_cert = _under("tls/server.pem")
    server_key = _under("tls/server.key")
    database = _under("state.sqlite")
    client_secret = _under("secrets/client_secret",
                           "The default principal's client secret (0600, never logged); identity.json has its client id.")
    signing_key = _under("secrets/jwt_signing_key")
    blob_sas_key = _under("secrets/blob_sas_key", "The HMAC key that signs the blob listener's SAS URLs (0600).")
    blobs = _under("blobs", "The blob listener's containers: one data file and one properties file per blob (0600).")
    identity = _under("identity.json", "The tenant: principals (secret hashes only) and role assignments (0600).")
    lock = _under("emulator.lock")
    listeners = _under("listeners.json", "The ports of the last run, reused on restart when free.")
    log = _under("emulator.log")
    instance_logs = _under("logs")

    def read_connection(self) -> dict:
        return json.loads(self.connection.read_text())


def write_private(path: Path, data: bytes) -> None:
    """Write a file only the owner can read, atomically (created 0600 before any byte lands)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def write_json_atomic(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)
