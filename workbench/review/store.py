"""The vote store: one SQLite row per vote, committed (WAL, ``synchronous=FULL``) before the vote is
acknowledged, so a killed server loses no acknowledged vote. The side mapping (which model was on the left)
is stored with the vote, on the server only."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS votes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    reviewer TEXT NOT NULL,
    pair TEXT NOT NULL,
    answer TEXT NOT NULL,      -- what the reviewer pressed: left, right or tie
    left_model TEXT NOT NULL,  -- which model (A or B) was shown on the left
    winner TEXT NOT NULL,      -- A, B or tie
    criteria TEXT NOT NULL,    -- JSON: {criterion: A | B | tie}
    at REAL NOT NULL,
    UNIQUE (reviewer, pair)
)
"""


class VoteStore:
    """Thread-safe: the app's worker threads share one connection behind a lock."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(SCHEMA)

    def add(self, reviewer: str, pair: str, answer: str, left_model: str, winner: str,
            criteria: dict[str, str]) -> bool:
        """Record a vote (committed when this returns); False if the reviewer already voted on the pair."""
        with self._lock:
            try:
                self._db.execute("INSERT INTO votes (reviewer, pair, answer, left_model, winner, criteria, at) "
                                 "VALUES (?, ?, ?, ?, ?, ?, ?)",
                                 (reviewer, pair, answer, left_model, winner, json.dumps(criteria), time.time()))
            except sqlite3.IntegrityError:
                return False
        return True

    def voted(self, reviewer: str) -> set[str]:
        with self._lock:
            return {r[0] for r in self._db.execute("SELECT pair FROM votes WHERE reviewer = ?", (reviewer,))}

    def votes(self) -> list[dict]:
        with self._lock:
            rows = self._db.execute("SELECT id, reviewer, pair, answer, left_model, winner, criteria, at FROM votes "
                                    "ORDER BY id").fetchall()
        return [{"id": r[0], "reviewer": r[1], "pair": r[2], "answer": r[3], "left_model": r[4], "winner": r[5],
                 "criteria": json.loads(r[6]), "at": r[7]} for r in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()
