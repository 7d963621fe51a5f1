"""Damaged state at start: refuse to start on a lost database, set damaged rows aside, serve the rest.

- ``check_database``: a state dir whose ``secrets/`` exist has run before, so its ``state.sqlite``
  must be there, non-empty and readable; otherwise the emulator would start silently empty (every
  endpoint, key and deployment forgotten) or crash on its first query. It refuses, in one line that
  names the file and what to do.
- ``quarantine_damaged``: a row that does not parse, holds NaN/Infinity, or has the wrong shape
  (``emulator/bodies.py``'s checks; ``emulator/registry.py``'s for registry, run and image rows) would
  make ARM listing and every scoring request answer 500.
  It is moved, with the rows under it, to the ``quarantine`` table and logged as an error.
"""

from __future__ import annotations

import logging
import sqlite3

from emulator import bodies, registry
from emulator.layout import StateDir
from emulator.process import EmulatorError
from emulator.store import Store

log = logging.getLogger(__name__)


def check_database(state: StateDir) -> None:
    db = state.database
    has_run = state.client_secret.exists() or state.signing_key.exists()
    remedy = (f"restore it (with {db.name}-wal if there is one) from a backup, or delete the state dir "
              f"{state.root} to start afresh with no endpoints")
    if not db.exists():
        if has_run:
            raise EmulatorError(f"the state database {db} is missing but {db.parent / 'secrets'} exists "
                                f"(this state dir has run before): {remedy}")
        return
    try:
        size = db.stat().st_size
        if size == 0 and has_run:
            raise EmulatorError(f"the state database {db} is empty (0 bytes) but {db.parent / 'secrets'} "
                                f"exists (this state dir has run before): {remedy}")
        with open(db, "rb") as f:
            f.read(1)
        connection = sqlite3.connect(db)
        try:
            verdict = connection.execute("PRAGMA quick_check").fetchone()[0]
        finally:
            connection.close()
    except (OSError, sqlite3.Error) as err:
        raise EmulatorError(f"the state database {db} cannot be read ({err}): {remedy}") from None
    if verdict != "ok":
        raise EmulatorError(f"the state database {db} is damaged (quick_check: {verdict[:120]}): {remedy}")


def quarantine_damaged(store: Store) -> list[str]:
    """Move damaged rows to the ``quarantine`` table; the ids moved (each logged as an error)."""
    moved: list[str] = []
    for resource_id, kind, body in store.raw_rows():
        try:
            if not isinstance(body, str):
                raise ValueError(f"body is a {type(body).__name__}, not JSON text")
            parsed = registry.stored(kind, body) if kind in registry.KINDS else bodies.stored(kind, body)
            if parsed["id"].lower() != resource_id:
                raise ValueError(f"body id {parsed['id']!r} does not match the row")
        except ValueError as err:
            _move(store, resource_id, f"{kind}: {err}", moved)
    for endpoint_id, primary, secondary in store.raw_keys():
        if not (isinstance(primary, str) and primary and isinstance(secondary, str) and secondary):
            _move(store, str(endpoint_id), "endpoint keys are not text", moved)
    return moved


def _move(store: Store, resource_id: str, reason: str, moved: list[str]) -> None:
    count = store.quarantine(resource_id, reason)
    log.error("QUARANTINED %s (%d row(s), now in state.sqlite's quarantine table): %s. "
              "The rest of the state is served.", resource_id, count, reason)
    moved.append(resource_id)
