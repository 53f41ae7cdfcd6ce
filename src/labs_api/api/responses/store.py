"""Stored responses in an embedded SQLite database (stdlib ``sqlite3``).

Each row holds a response object, the input items it was given, and the whole conversation up
to and including its output (what ``previous_response_id`` continues from). Rows are bounded by
age (``ttl_s``), count and total size (the oldest go first), and belong to an owner: the
SHA-256 of the API key that created them (empty without keys), never the key itself. Every
call is blocking; the service runs them on a worker thread (``asyncio.to_thread``), one at a
time behind a lock.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DB_FILE = "responses.sqlite3"
SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    response TEXT NOT NULL,
    input_items TEXT NOT NULL,
    conversation TEXT NOT NULL,
    size INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS responses_created ON responses (created_at);
CREATE INDEX IF NOT EXISTS responses_expires ON responses (expires_at);
"""


@dataclass(frozen=True)
class StoredResponse:
    id: str
    response: dict[str, Any]
    input_items: list[dict[str, Any]]
    conversation: list[dict[str, Any]]


class ResponseStore:
    """``location``: a directory (the file ``responses.sqlite3`` in it) or ``:memory:``."""

    def __init__(self, location: str, ttl_s: float, max_count: int,
                 max_bytes: int = 1 << 30) -> None:
        self.ttl_s = ttl_s
        self.max_count = max_count
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        if location == ":memory:":
            path = ":memory:"
        else:
            folder = Path(location).expanduser()
            folder.mkdir(parents=True, exist_ok=True)
            path = str(folder / DB_FILE)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        if path != ":memory:":
            self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(SCHEMA)

    def put(self, owner: str, record: StoredResponse, now: float | None = None) -> None:
        now = time.time() if now is None else now
        columns = [_dump(record.response), _dump(record.input_items),
                   _dump(record.conversation)]
        size = sum(len(c) for c in columns)
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.execute(
                    "INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (record.id, owner, now, now + self.ttl_s, *columns, size))
                self._db.execute("DELETE FROM responses WHERE expires_at <= ?", (now,))
                self._db.execute(
                    "DELETE FROM responses WHERE id IN (SELECT id FROM responses ORDER BY "
                    "created_at DESC, rowid DESC LIMIT -1 OFFSET ?)", (self.max_count,))
                self._db.execute(  # the newest first, until their sizes add up past the bound
                    "DELETE FROM responses WHERE id IN (SELECT id FROM (SELECT id, SUM(size) "
                    "OVER (ORDER BY created_at DESC, rowid DESC) AS newer FROM responses) "
                    "WHERE newer > ?)", (self.max_bytes,))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def get(self, owner: str, response_id: str, now: float | None = None,
            ) -> StoredResponse | None:
        now = time.time() if now is None else now
        with self._lock:
            row = self._db.execute(
                "SELECT response, input_items, conversation FROM responses "
                "WHERE id = ? AND owner = ? AND expires_at > ?",
                (response_id, owner, now)).fetchone()
        if row is None:
            return None
        return StoredResponse(response_id, *(json.loads(column) for column in row))

    def delete(self, owner: str, response_id: str) -> bool:
        with self._lock:
            cursor = self._db.execute("DELETE FROM responses WHERE id = ? AND owner = ?",
                                      (response_id, owner))
        return cursor.rowcount > 0

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _dump(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
