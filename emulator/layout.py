"""Where the emulator keeps things inside its state dir; the client factory reads the same names."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class StateDir:
    root: Path

    @property
    def connection(self) -> Path:
        return self.root / "connection.json"

    @property
    def ca_cert(self) -> Path:
        return self.root / "tls" / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.root / "tls" / "ca.key"

    @property
    def server_cert(self) -> Path:
        return self.root / "tls" / "server.pem"

    @property
    def server_key(self) -> Path:
        return self.root / "tls" / "server.key"

    @property
    def database(self) -> Path:
        return self.root / "state.sqlite"

    @property
    def client_secret(self) -> Path:
        """Shared secret a local credential presents to get tokens (0600, never logged)."""
        return self.root / "secrets" / "client_secret"

    @property
    def signing_key(self) -> Path:
        return self.root / "secrets" / "jwt_signing_key"

    @property
    def lock(self) -> Path:
        return self.root / "emulator.lock"

    @property
    def listeners(self) -> Path:
        """The ports of the last run, reused on restart when free so URLs stay the same."""
        return self.root / "listeners.json"

    @property
    def log(self) -> Path:
        return self.root / "emulator.log"

    @property
    def instance_logs(self) -> Path:
        return self.root / "logs"

    def read_connection(self) -> dict:
        return json.loads(self.connection.read_text())


def write_private(path: Path, data: bytes) -> None:
    """Write a file only the owner can read, atomically (created 0600 before any byte lands)."""
    import os

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
