"""The review database: SQLite, one row per judgement, every write one transaction.

Tables:

```
cases    (case_id, model_revision) -> the case's text fields (JSON), its image (PNG pixels), its position
reviews  review_id, case_id, model_revision, reviewer, created_at (UTC ISO 8601), answer_verdict,
         reasoning_score, box_verdicts (JSON), corrected_boxes (JSON), comment, prediction (the text judged)
```

A judgement is never updated in place: saving a case again adds a row, and the newest row of a (case, reviewer,
model revision) is the current one (`latest_reviews`), so a crash can only lose the judgement being typed, and two
reviewers writing at once each get their own rows. The database runs in WAL mode with `synchronous=FULL`; writes
take the write lock up front (`BEGIN IMMEDIATE`) and wait up to `timeout` seconds for another writer.

>>> import tempfile, os
>>> store = ReviewStore(os.path.join(tempfile.mkdtemp(), "reviews.sqlite"))
>>> store.add_cases([ReviewCase("c0", prediction="<answer>A</answer>")], "m@1")
1
>>> store.add_review(case_id="c0", model_revision="m@1", reviewer="ana", answer_verdict="correct", reasoning_score=4)
1
>>> [(r["reviewer"], r["answer_verdict"], r["reasoning_score"]) for r in store.latest_reviews()]
[('ana', 'correct', 4)]
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .cases import ReviewCase

__all__ = ["ANSWER_VERDICTS", "BOX_VERDICTS", "SCHEMA_VERSION", "ReviewStore"]

SCHEMA_VERSION = 1
ANSWER_VERDICTS = ("correct", "incorrect", "unsure")
BOX_VERDICTS = ("correct", "wrong place", "wrong label")

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS cases (
    case_id TEXT NOT NULL,
    model_revision TEXT NOT NULL,
    position INTEGER NOT NULL,
    record TEXT NOT NULL,
    image BLOB,
    added_at TEXT NOT NULL,
    PRIMARY KEY (case_id, model_revision)
);
CREATE TABLE IF NOT EXISTS reviews (
    review_id INTEGER PRIMARY KEY AUTOINCREMENT,
    case_id TEXT NOT NULL,
    model_revision TEXT NOT NULL,
    reviewer TEXT NOT NULL CHECK (length(reviewer) > 0),
    created_at TEXT NOT NULL,
    answer_verdict TEXT NOT NULL CHECK (answer_verdict IN {ANSWER_VERDICTS!r}),
    reasoning_score INTEGER CHECK (reasoning_score IS NULL OR reasoning_score BETWEEN 1 AND 5),
    box_verdicts TEXT NOT NULL DEFAULT '[]',
    corrected_boxes TEXT NOT NULL DEFAULT '[]',
    comment TEXT NOT NULL DEFAULT '',
    prediction TEXT NOT NULL DEFAULT '',
    FOREIGN KEY (case_id, model_revision) REFERENCES cases (case_id, model_revision)
);
CREATE INDEX IF NOT EXISTS reviews_by_reviewer ON reviews (reviewer, model_revision, case_id, review_id);
"""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class ReviewStore:
    """Reviews and the cases they judge, in one SQLite file (created on first use).

    Args:
        path: the database file.
        timeout: seconds a write waits for another process's write to finish.
    """

    def __init__(self, path: str | os.PathLike, timeout: float = 30.0):
        self.path = Path(path)
        self.timeout = timeout
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._transaction() as con:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    con.execute(statement)
            con.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            version = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
        if int(version) != SCHEMA_VERSION:
            raise ValueError(
                f"{self.path}: review database schema version {version}, this hf-meddiff reads {SCHEMA_VERSION}; "
                "export it with the hf-meddiff that wrote it or start a new --db."
            )

    # -------------------------------------------------------------------------------------------- plumbing

    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
        con.row_factory = sqlite3.Row
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=FULL")
        con.execute("PRAGMA foreign_keys=ON")
        return con

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        con = self._connect()
        try:
            con.execute("BEGIN IMMEDIATE")
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")
        finally:
            con.close()

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        con = self._connect()
        try:
            yield con
        finally:
            con.close()

    # -------------------------------------------------------------------------------------------- cases

    def add_cases(self, cases: Sequence[ReviewCase], model_revision: str) -> int:
        """Store `cases` for `model_revision` (a case already stored keeps its first copy); returns how many
        were new."""
        added = 0
        with self._transaction() as con:
            start = con.execute(
                "SELECT COALESCE(MAX(position) + 1, 0) FROM cases WHERE model_revision = ?", (model_revision,)
            ).fetchone()[0]
            for case in cases:
                cursor = con.execute(
                    "INSERT OR IGNORE INTO cases VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        case.case_id,
                        model_revision,
                        start + added,
                        json.dumps(case.record()),
                        case.image_png,
                        _now(),
                    ),
                )
                added += cursor.rowcount
        return added

    def cases(self, model_revision: str, case_ids: Sequence[str] | None = None) -> list[ReviewCase]:
        """The stored cases of `model_revision` in the order they were added (only `case_ids`, in that order,
        when given)."""
        with self._read() as con:
            rows = con.execute(
                "SELECT case_id, record, image FROM cases WHERE model_revision = ? ORDER BY position",
                (model_revision,),
            ).fetchall()
        by_id = {r["case_id"]: ReviewCase.from_record(json.loads(r["record"]), r["image"]) for r in rows}
        if case_ids is None:
            return list(by_id.values())
        return [by_id[i] for i in case_ids if i in by_id]

    def case_ids(self, model_revision: str) -> list[str]:
        """The ids of the stored cases of `model_revision`, in order."""
        with self._read() as con:
            rows = con.execute(
                "SELECT case_id FROM cases WHERE model_revision = ? ORDER BY position", (model_revision,)
            ).fetchall()
        return [r[0] for r in rows]

    def model_revisions(self) -> list[str]:
        """Every model revision with stored cases."""
        with self._read() as con:
            return [r[0] for r in con.execute("SELECT DISTINCT model_revision FROM cases ORDER BY 1")]

    # -------------------------------------------------------------------------------------------- reviews

    def add_review(
        self,
        *,
        case_id: str,
        model_revision: str,
        reviewer: str,
        answer_verdict: str,
        reasoning_score: int | None = None,
        box_verdicts: Sequence[Mapping[str, Any]] = (),
        corrected_boxes: Sequence[Mapping[str, Any]] = (),
        comment: str = "",
    ) -> int:
        """Record one judgement in its own transaction; returns its `review_id`.

        `box_verdicts`: per model box `{"index", "label", "bbox", "verdict"}` (verdict one of `BOX_VERDICTS`);
        `corrected_boxes`: `{"label", "bbox", "for_box"}` (`for_box` the 1-based model box it corrects, or None
        for a finding the model missed). Raises `ValueError` naming the field that is wrong.
        """
        reviewer = (reviewer or "").strip()
        if not reviewer:
            raise ValueError("reviewer is empty; start the app with --reviewer NAME or log in.")
        if answer_verdict not in ANSWER_VERDICTS:
            raise ValueError(f"answer_verdict must be one of {ANSWER_VERDICTS}, got {answer_verdict!r}.")
        if reasoning_score is not None and int(reasoning_score) not in range(1, 6):
            raise ValueError(f"reasoning_score must be 1..5 or None, got {reasoning_score!r}.")
        for verdict in box_verdicts:
            if verdict.get("verdict") not in BOX_VERDICTS:
                raise ValueError(
                    f"box verdict must be one of {BOX_VERDICTS}, got {verdict.get('verdict')!r}."
                )
        for box in corrected_boxes:
            bbox = list(box.get("bbox") or [])
            if len(bbox) != 4 or not (bbox[2] > bbox[0] and bbox[3] > bbox[1]):
                raise ValueError(f"corrected box {bbox!r} must be [x0, y0, x1, y1] with x1 > x0 and y1 > y0.")
        with self._transaction() as con:
            case = con.execute(
                "SELECT record FROM cases WHERE case_id = ? AND model_revision = ?", (case_id, model_revision)
            ).fetchone()
            if case is None:
                raise ValueError(
                    f"case {case_id!r} of model revision {model_revision!r} is not in {self.path}."
                )
            cursor = con.execute(
                "INSERT INTO reviews (case_id, model_revision, reviewer, created_at, answer_verdict, "
                "reasoning_score, box_verdicts, corrected_boxes, comment, prediction) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (
                    case_id,
                    model_revision,
                    reviewer,
                    _now(),
                    answer_verdict,
                    None if reasoning_score is None else int(reasoning_score),
                    json.dumps([dict(v) for v in box_verdicts]),
                    json.dumps([dict(b) for b in corrected_boxes]),
                    comment or "",
                    json.loads(case["record"]).get("prediction", ""),
                ),
            )
            return int(cursor.lastrowid)

    @staticmethod
    def _review(row: sqlite3.Row) -> dict[str, Any]:
        out = dict(row)
        out["box_verdicts"] = json.loads(out["box_verdicts"])
        out["corrected_boxes"] = json.loads(out["corrected_boxes"])
        return out

    def reviews(self, model_revision: str | None = None) -> list[dict[str, Any]]:
        """Every judgement ever saved (superseded ones included), oldest first."""
        query, args = "SELECT * FROM reviews", ()
        if model_revision is not None:
            query, args = query + " WHERE model_revision = ?", (model_revision,)
        with self._read() as con:
            return [self._review(r) for r in con.execute(query + " ORDER BY review_id", args)]

    def latest_reviews(self, model_revision: str | None = None) -> list[dict[str, Any]]:
        """The current judgement of each (case, reviewer, model revision): the newest row of each."""
        query = (
            "SELECT * FROM reviews WHERE review_id IN (SELECT MAX(review_id) FROM reviews "
            "GROUP BY case_id, reviewer, model_revision)"
        )
        args: tuple = ()
        if model_revision is not None:
            query, args = query + " AND model_revision = ?", (model_revision,)
        with self._read() as con:
            return [self._review(r) for r in con.execute(query + " ORDER BY review_id", args)]

    def latest_review(self, case_id: str, model_revision: str, reviewer: str) -> dict[str, Any] | None:
        """The current judgement of one case by one reviewer (None when there is none)."""
        with self._read() as con:
            row = con.execute(
                "SELECT * FROM reviews WHERE case_id = ? AND model_revision = ? AND reviewer = ? "
                "ORDER BY review_id DESC LIMIT 1",
                (case_id, model_revision, reviewer),
            ).fetchone()
        return None if row is None else self._review(row)

    def reviewed_case_ids(self, model_revision: str, reviewer: str) -> set[str]:
        """The cases `reviewer` has judged for `model_revision`."""
        with self._read() as con:
            rows = con.execute(
                "SELECT DISTINCT case_id FROM reviews WHERE model_revision = ? AND reviewer = ?",
                (model_revision, reviewer),
            ).fetchall()
        return {r[0] for r in rows}
