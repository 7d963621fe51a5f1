"""ARM state in SQLite (WAL, one transaction per change), keyed by lower-cased ARM id.

Resource bodies are stored as the JSON the API returns, so a restart serves exactly what was there.
Endpoint keys live in their own table: this file is the emulator's key store.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS resources (
    id TEXT PRIMARY KEY,          -- lower-cased ARM id
    kind TEXT NOT NULL,           -- endpoint | deployment | environment | model | autoscale | registry | run | image
    parent TEXT NOT NULL,         -- lower-cased id of the containing scope or resource
    name TEXT NOT NULL,           -- lower-cased resource name
    body TEXT NOT NULL            -- the JSON the API answers with
);
CREATE INDEX IF NOT EXISTS resources_parent ON resources(kind, parent);
CREATE INDEX IF NOT EXISTS resources_name ON resources(kind, name);
CREATE TABLE IF NOT EXISTS endpoint_keys (
    endpoint TEXT PRIMARY KEY,    -- lower-cased endpoint id
    primary_key TEXT NOT NULL,
    secondary_key TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS quarantine (  -- damaged rows set aside at start (emulator/integrity.py)
    id TEXT, kind TEXT, parent TEXT, name TEXT, body TEXT,
    reason TEXT NOT NULL,
    quarantined_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS operations (
    id TEXT PRIMARY KEY,          -- the operation id in the Azure-AsyncOperation / Location URLs
    target TEXT NOT NULL,         -- lower-cased id of the resource it changes
    status TEXT NOT NULL,         -- InProgress | Succeeded | Failed | Canceled
    error TEXT,                   -- JSON [code, message] when Failed or Canceled
    started TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS operations_target ON operations(target, status);
"""


class Store:
    def __init__(self, path: Path):
        # The key store is the owner's only, like secrets/: SQLite gives -wal and -shm the main file's mode.
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            if file.exists():
                file.chmod(0o600)
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._listeners: list[Callable[[], None]] = []

    def close(self) -> None:
        self._db.close()

    def raw_rows(self) -> list[tuple[str, str, object]]:
        """(id, kind, body) of every resource row as stored, for the start-up integrity check."""
        return self._db.execute("SELECT id, kind, body FROM resources ORDER BY rowid").fetchall()

    def raw_keys(self) -> list[tuple[object, object, object]]:
        return self._db.execute("SELECT endpoint, primary_key, secondary_key FROM endpoint_keys").fetchall()

    def quarantine(self, resource_id: str, reason: str) -> int:
        """Move a damaged row, the rows under it and its keys to the quarantine table; the number moved."""
        with self.transaction():
            moved = self._db.execute(
                "INSERT INTO quarantine SELECT id, kind, parent, name, body, "
                "CASE WHEN id = ?1 THEN ?2 ELSE 'its parent ' || ?1 || ' was quarantined' END, "
                "datetime('now') FROM resources WHERE id = ?1 OR parent = ?1", (resource_id, reason)).rowcount
            self._db.execute("DELETE FROM resources WHERE id = ?1 OR parent = ?1", (resource_id,))
            moved += self._db.execute(
                "INSERT INTO quarantine SELECT endpoint, 'endpoint_keys', '', '', NULL, ?2, datetime('now') "
                "FROM endpoint_keys WHERE endpoint = ?1", (resource_id, reason)).rowcount
            self._db.execute("DELETE FROM endpoint_keys WHERE endpoint = ?1", (resource_id,))
        return moved

    def on_change(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """All writes inside commit together or not at all."""
        if self._db.in_transaction:
            yield
            return
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
        for listener in self._listeners:
            listener()

    def get(self, resource_id: str) -> dict | None:
        row = self._db.execute("SELECT body FROM resources WHERE id = ?", (resource_id.lower(),)).fetchone()
        return json.loads(row[0]) if row else None

    def children(self, kind: str, parent: str) -> list[dict]:
        rows = self._db.execute(
            "SELECT body FROM resources WHERE kind = ? AND parent = ? ORDER BY rowid",
            (kind, parent.lower()),
        )
        return [json.loads(r[0]) for r in rows]

    def all(self, kind: str) -> list[dict]:
        rows = self._db.execute("SELECT body FROM resources WHERE kind = ? ORDER BY rowid", (kind,))
        return [json.loads(r[0]) for r in rows]

    def by_name(self, kind: str, name: str) -> list[dict]:
        rows = self._db.execute(
            "SELECT body FROM resources WHERE kind = ? AND name = ?", (kind, name.lower())
        )
        return [json.loads(r[0]) for r in rows]

    def put(self, kind: str, parent: str, body: dict) -> None:
        with self.transaction():
            self._db.execute(
                "INSERT INTO resources(id, kind, parent, name, body) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT(id) DO UPDATE SET body = excluded.body",
                (body["id"].lower(), kind, parent.lower(), body["name"].lower(), json.dumps(body)),
            )

    def delete(self, resource_id: str) -> None:
        """Delete a resource and everything under it (an endpoint's deployments and keys)."""
        rid = resource_id.lower()
        with self.transaction():
            self._db.execute("DELETE FROM resources WHERE id = ? OR parent = ?", (rid, rid))
            self._db.execute("DELETE FROM endpoint_keys WHERE endpoint = ?", (rid,))

    def keys(self, endpoint_id: str) -> tuple[str, str] | None:
        row = self._db.execute(
            "SELECT primary_key, secondary_key FROM endpoint_keys WHERE endpoint = ?",
            (endpoint_id.lower(),),
        ).fetchone()
        return (row[0], row[1]) if row else None

    def set_keys(self, endpoint_id: str, primary: str, secondary: str) -> None:
        with self.transaction():
            self._db.execute(
                "INSERT INTO endpoint_keys(endpoint, primary_key, secondary_key) VALUES (?, ?, ?) "
                "ON CONFLICT(endpoint) DO UPDATE SET primary_key = excluded.primary_key, "
                "secondary_key = excluded.secondary_key",
                (endpoint_id.lower(), primary, secondary),
            )

    # Operations (LRO status) outlive a restart so a poller's URL keeps answering. They are not
    # resources: writing one does not notify the change listeners.

    def add_operation(self, op_id: str, target: str, status: str, started: str, keep: int) -> None:
        self._db.execute("INSERT INTO operations(id, target, status, error, started) VALUES (?, ?, ?, NULL, ?)",
                         (op_id, target.lower(), status, started))
        self._db.execute("DELETE FROM operations WHERE rowid <= (SELECT MAX(rowid) FROM operations) - ?", (keep,))

    def operation(self, op_id: str) -> tuple[str, str, tuple[str, str] | None, str] | None:
        """(target, status, error, started) of an operation, or None."""
        row = self._db.execute("SELECT target, status, error, started FROM operations WHERE id = ?",
                               (op_id,)).fetchone()
        if row is None:
            return None
        return row[0], row[1], tuple(json.loads(row[2])) if row[2] else None, row[3]

    def settle_operations(self, target: str, status: str, error: tuple[str, str] | None) -> None:
        """Finish every InProgress operation on ``target``."""
        self._db.execute("UPDATE operations SET status = ?, error = ? WHERE target = ? AND status = 'InProgress'",
                         (status, json.dumps(list(error)) if error else None, target.lower()))
