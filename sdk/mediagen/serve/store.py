"""Durable predictions: one SQLite file, and the outputs on disk beside it.

A prediction is written when it is created, when it starts and when it ends; progress and log
lines in between live in memory (the running prediction's record) and are written with the end.
Outputs are written (atomically; fsynced too with `fsync=True`) before the row that points at them
says `succeeded`, so a crash never leaves a finished prediction without its files. When the server starts, rows still
`starting` or `processing` belong to a process that died: they are marked failed, with a message
saying so.

Layout: `<db>` (SQLite, WAL) and `<db>.files/<prediction id>/<file key>/out-<i>.<ext>`, where the
file key is a random secret of the prediction: knowing an output URL is the permission to read it.
Uploaded inputs (`POST /v1/files`) live in `<db>.files/uploads/<id>/<key>/<name>` alike.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

__all__ = ["PredictionRecord", "PredictionStore", "Status", "UploadRecord", "new_prediction_id", "iso"]

Status = Literal["starting", "processing", "succeeded", "failed", "canceled"]
TERMINAL: frozenset[str] = frozenset({"succeeded", "failed", "canceled"})

INTERRUPTED_ERROR = (
    "the server stopped while this prediction was running (a crash or a restart), so it has no "
    "output; create the prediction again"
)

_ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"
_ID = re.compile(r"^[a-z0-9]{26}$")
_KEY = re.compile(r"^[A-Za-z0-9_-]{16,64}$")


def new_prediction_id() -> str:
    """A prediction id like Replicate's: 26 lowercase letters and digits, from a CSPRNG."""
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(26))


def iso(ts: float | None) -> str | None:
    """An epoch time as Replicate writes it (`2024-04-22T11:15:15.329Z`)."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass
class PredictionRecord:
    """One prediction as stored, and as the running server holds it."""

    id: str
    owner: str
    name: str
    version: str
    token: str
    """The name of the token that created it: only that token sees it."""
    input: dict[str, Any]
    """The input exactly as it was sent."""
    status: Status = "starting"
    output: list[str] | None = None
    """Output file names (relative to the prediction's folder); URLs are built per response."""
    error: str | None = None
    logs: str = ""
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    completed_at: float | None = None
    predict_time: float | None = None
    file_key: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    data_removed: bool = False
    deadline: float | None = None
    """Epoch time at which `Cancel-After` cancels it."""
    webhook: str | None = None
    webhook_events: list[str] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    """Warnings, seeds, usage: what the result said beyond its outputs."""

    @property
    def done(self) -> bool:
        """Whether it has ended."""
        return self.status in TERMINAL

    @property
    def ref(self) -> str:
        """`owner/name` of its model."""
        return f"{self.owner}/{self.name}"

    def output_urls(self, base: str) -> list[str] | None:
        """Absolute output URLs under `base` (the origin the caller reached the server at)."""
        if self.output is None:
            return None
        return [f"{base}/outputs/{self.id}/{self.file_key}/{name}" for name in self.output]

    def output_json(self, base: str) -> Any:
        """The `output` of the prediction object: its URLs, laid out as its model lays them out.

        A model with its own output shape (`ModelDescription.output_layout`) left a layout in
        `extra`: JSON whose `{"$output": i}` leaves stand for the i-th output's URL. Without one the
        output is the list of URLs.
        """
        urls = self.output_urls(base)
        layout = self.extra.get("output_layout")
        if urls is None or layout is None:
            return urls

        def fill(node: Any) -> Any:
            if isinstance(node, dict):
                index = node.get("$output")
                if len(node) == 1 and isinstance(index, int) and 0 <= index < len(urls):
                    return urls[index]
                return {key: fill(value) for key, value in node.items()}
            if isinstance(node, list):
                return [fill(item) for item in node]
            return node

        return fill(layout)

    def to_json(self, base: str, *, status: Status | None = None) -> dict[str, Any]:
        """The prediction object of Replicate's API.

        Args:
            base: Scheme and host (and root path) the caller used, without a trailing slash.
            status: Report this status instead (a sync create that is not done says `starting`).
        """
        body: dict[str, Any] = {
            "id": self.id,
            "model": self.ref,
            "version": self.version,
            "input": None if self.data_removed else self.input,
            "output": self.output_json(base),
            "logs": self.logs,
            "error": self.error,
            "status": status or self.status,
            "source": "api",
            "data_removed": self.data_removed,
            "created_at": iso(self.created_at),
            "urls": {
                "get": f"{base}/v1/predictions/{self.id}",
                "cancel": f"{base}/v1/predictions/{self.id}/cancel",
                "web": f"{base}/v1/predictions/{self.id}",
            },
        }
        if self.started_at is not None:
            body["started_at"] = iso(self.started_at)
        if self.completed_at is not None:
            body["completed_at"] = iso(self.completed_at)
            metrics: dict[str, Any] = {"total_time": round(self.completed_at - self.created_at, 6)}
            if self.predict_time is not None:
                metrics["predict_time"] = round(self.predict_time, 6)
            body["metrics"] = metrics
        if self.deadline is not None:
            body["deadline"] = iso(self.deadline)
        if self.extra.get("warnings"):
            body["warnings"] = self.extra["warnings"]
        return body


_COLUMNS = (
    "id",
    "owner",
    "name",
    "version",
    "token",
    "input",
    "status",
    "output",
    "error",
    "logs",
    "created_at",
    "started_at",
    "completed_at",
    "predict_time",
    "file_key",
    "data_removed",
    "deadline",
    "webhook",
    "webhook_events",
    "extra",
)
_JSON_COLUMNS = frozenset({"input", "output", "webhook_events", "extra"})

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS predictions (
    {", ".join(f"{c} {'REAL' if c.endswith(('_at', '_time')) or c == 'deadline' else 'TEXT'}" for c in _COLUMNS)},
    PRIMARY KEY (id)
);
CREATE INDEX IF NOT EXISTS predictions_by_token ON predictions (token, created_at DESC, id DESC);
CREATE TABLE IF NOT EXISTS uploads (
    id TEXT PRIMARY KEY, token TEXT, key TEXT, name TEXT, content_type TEXT, size INTEGER,
    sha256 TEXT, md5 TEXT, metadata TEXT, created_at REAL
);
CREATE INDEX IF NOT EXISTS uploads_by_token ON uploads (token, created_at DESC, id DESC);
"""
_UPLOAD_COLUMNS = ("id", "token", "key", "name", "content_type", "size", "sha256", "md5", "metadata", "created_at")


@dataclass(frozen=True)
class UploadRecord:
    """An input file kept by `POST /v1/files`: who uploaded it, and what it is."""

    id: str
    token: str
    key: str
    name: str
    content_type: str
    size: int
    sha256: str
    md5: str
    metadata: dict[str, Any]
    created_at: float

    def path(self) -> str:
        """The URL path that reads it (`/uploads/<id>/<key>/<name>`; the key is the permission)."""
        return f"/uploads/{self.id}/{self.key}/{self.name}"


class PredictionStore:
    """Predictions in SQLite, outputs in files. Thread-safe; call it from `asyncio.to_thread`.

    Args:
        path: The SQLite file (created with its folder when missing).
        fsync: Also survive a power loss or an OS crash: every commit and output file is flushed to
            the disk before it counts (about 25 ms a write on a busy VM disk). Without it, what was
            committed survives the process being killed (SQLite's WAL and the page cache outlive it),
            which is what a crash or `kill -9` of the server needs.
    """

    def __init__(self, path: str | os.PathLike[str], *, fsync: bool = False) -> None:
        self.fsync = fsync
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.files = self.path.with_name(self.path.name + ".files")
        self.files.mkdir(exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        # WAL keeps committed rows when the process is killed; FULL also when the machine loses power.
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={'FULL' if fsync else 'NORMAL'}")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    # -- rows -----------------------------------------------------------------------------------

    def save(self, record: PredictionRecord) -> None:
        """Insert or replace a prediction's row (one committed transaction)."""
        row = []
        for column in _COLUMNS:
            value = getattr(record, column)
            if column in _JSON_COLUMNS:
                value = None if value is None else json.dumps(value)
            elif column == "data_removed":
                value = "1" if value else "0"
            row.append(value)
        placeholders = ", ".join("?" for _ in _COLUMNS)
        with self._lock:
            self._db.execute(f"INSERT OR REPLACE INTO predictions ({', '.join(_COLUMNS)}) VALUES ({placeholders})", row)

    def get(self, prediction_id: str) -> PredictionRecord | None:
        """The prediction with this id, or None."""
        with self._lock:
            cur = self._db.execute(f"SELECT {', '.join(_COLUMNS)} FROM predictions WHERE id = ?", (prediction_id,))
            row = cur.fetchone()
        return None if row is None else _record(row)

    def page(
        self,
        token: str,
        *,
        before: tuple[float, str] | None = None,
        created_after: float | None = None,
        limit: int = 100,
    ) -> list[PredictionRecord]:
        """A token's predictions, newest first.

        Args:
            token: The token name whose predictions to list.
            before: `(created_at, id)` of the last item of the previous page.
            created_after: Only predictions created after this epoch time.
            limit: Most rows to return.
        """
        sql = f"SELECT {', '.join(_COLUMNS)} FROM predictions WHERE token = ?"
        args: list[Any] = [token]
        if before is not None:
            sql += " AND (created_at < ? OR (created_at = ? AND id < ?))"
            args += [before[0], before[0], before[1]]
        if created_after is not None:
            sql += " AND created_at > ?"
            args.append(created_after)
        sql += " ORDER BY created_at DESC, id DESC LIMIT ?"
        args.append(limit)
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        return [_record(r) for r in rows]

    def run_count(self, owner: str, name: str) -> int:
        """How many predictions a model has had."""
        with self._lock:
            row = self._db.execute(
                "SELECT COUNT(*) FROM predictions WHERE owner = ? AND name = ?", (owner, name)
            ).fetchone()
        return int(row[0])

    def fail_interrupted(self) -> int:
        """Mark predictions left running by a dead process as failed; returns how many."""
        now = time.time()
        with self._lock:
            cur = self._db.execute(
                "UPDATE predictions SET status = 'failed', error = ?, completed_at = ? "
                "WHERE status IN ('starting', 'processing')",
                (INTERRUPTED_ERROR, now),
            )
            return int(cur.rowcount)

    def purge(self, older_than: float) -> int:
        """Remove inputs, outputs and logs of ended predictions created before `older_than` (epoch).

        The rows stay (`data_removed`), so an id still answers, as Replicate's do.
        """
        with self._lock:
            ids = [
                r[0]
                for r in self._db.execute(
                    "SELECT id FROM predictions WHERE created_at < ? AND data_removed = '0' "
                    "AND status IN ('succeeded', 'failed', 'canceled')",
                    (older_than,),
                ).fetchall()
            ]
            for prediction_id in ids:
                self._db.execute(
                    "UPDATE predictions SET data_removed = '1', input = NULL, output = NULL, logs = '' WHERE id = ?",
                    (prediction_id,),
                )
        for prediction_id in ids:
            shutil.rmtree(self.files / prediction_id, ignore_errors=True)
        with self._lock:
            self._db.execute("DELETE FROM uploads WHERE created_at < ?", (older_than,))
        uploads = self.files / "uploads"
        for folder in uploads.iterdir() if uploads.is_dir() else ():
            if folder.stat().st_mtime < older_than:
                shutil.rmtree(folder, ignore_errors=True)
        return len(ids)

    # -- files ----------------------------------------------------------------------------------

    def write_outputs(self, record: PredictionRecord, files: list[tuple[bytes, str]]) -> list[str]:
        """Write a prediction's outputs atomically and return their names.

        Args:
            record: The prediction.
            files: `(bytes, suffix)` of each output, in order.
        """
        folder = self.files / record.id / record.file_key
        folder.mkdir(parents=True, exist_ok=True)
        names = []
        for index, (data, suffix) in enumerate(files):
            name = f"out-{index}{suffix}"
            _write_atomic(folder / name, data, fsync=self.fsync)
            names.append(name)
        if self.fsync:
            _fsync_dir(folder)
        return names

    def write_upload(
        self,
        data: bytes,
        filename: str,
        *,
        token: str = "",
        content_type: str = "application/octet-stream",
        metadata: dict[str, Any] | None = None,
    ) -> UploadRecord:
        """Keep an uploaded input file (`POST /v1/files`); returns its row.

        Its folder names (an id and a random key) are the permission to read it, as with outputs;
        its row says whose it is, for `GET`/`DELETE /v1/files/{id}` and the list.
        """
        import hashlib

        from ..safety import safe_filename

        file_id, key, name = new_prediction_id(), secrets.token_urlsafe(24), safe_filename(filename, "upload")
        folder = self.files / "uploads" / file_id / key
        folder.mkdir(parents=True)
        _write_atomic(folder / name, data, fsync=self.fsync)
        row = (
            file_id,
            token,
            key,
            name,
            content_type,
            len(data),
            hashlib.sha256(data).hexdigest(),
            hashlib.md5(data, usedforsecurity=False).hexdigest(),
            json.dumps(metadata or {}),
            time.time(),
        )
        with self._lock:
            self._db.execute(f"INSERT INTO uploads ({', '.join(_UPLOAD_COLUMNS)}) VALUES ({', '.join('?' * 10)})", row)
        return UploadRecord(*row[:8], metadata=metadata or {}, created_at=row[9])

    def get_upload(self, file_id: str, token: str) -> UploadRecord | None:
        """A token's upload by id (None for another token's: tenants never see each other's files)."""
        with self._lock:
            row = self._db.execute(
                f"SELECT {', '.join(_UPLOAD_COLUMNS)} FROM uploads WHERE id = ? AND token = ?", (file_id, token)
            ).fetchone()
        return None if row is None else _upload(row)

    def uploads(self, token: str, *, before: tuple[float, str] | None = None, limit: int = 100) -> list[UploadRecord]:
        """A token's uploads, newest first (`before`: `(created_at, id)` of the previous page's last)."""
        sql = f"SELECT {', '.join(_UPLOAD_COLUMNS)} FROM uploads WHERE token = ?"
        args: list[Any] = [token]
        if before is not None:
            sql += " AND (created_at < ? OR (created_at = ? AND id < ?))"
            args += [before[0], before[0], before[1]]
        sql += " ORDER BY created_at DESC, id DESC LIMIT ?"
        args.append(limit)
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        return [_upload(r) for r in rows]

    def delete_upload(self, file_id: str, token: str) -> bool:
        """Remove a token's upload, row and bytes; False when it has none by that id."""
        with self._lock:
            gone = self._db.execute("DELETE FROM uploads WHERE id = ? AND token = ?", (file_id, token)).rowcount
        if gone and _ID.match(file_id):
            shutil.rmtree(self.files / "uploads" / file_id, ignore_errors=True)
        return bool(gone)

    def upload_file(self, file_id: str, key: str, filename: str) -> Path | None:
        """The file behind an upload URL, or None."""
        from ..safety import safe_filename

        # Every part comes from a URL: only the shapes this store makes, so no path can climb out.
        if not (_ID.match(file_id) and _KEY.match(key)) or safe_filename(filename) != filename:
            return None
        path = self.files / "uploads" / file_id / key / filename
        return path if path.is_file() else None

    def output_file(self, prediction_id: str, key: str, filename: str) -> Path | None:
        """The file behind an output URL, or None when the id, key or name does not match."""
        record = self.get(prediction_id)
        if record is None or record.output is None or record.data_removed:
            return None
        if not secrets.compare_digest(record.file_key.encode(), key.encode()):
            return None
        if filename not in record.output:  # only names we wrote: no path ever comes from the URL
            return None
        path = self.files / record.id / record.file_key / filename
        return path if path.is_file() else None


def _upload(row: tuple[Any, ...]) -> UploadRecord:
    values = dict(zip(_UPLOAD_COLUMNS, row, strict=True))
    values["metadata"] = json.loads(values["metadata"] or "{}")
    values["size"] = int(values["size"])
    return UploadRecord(**values)


def _record(row: tuple[Any, ...]) -> PredictionRecord:
    values = dict(zip(_COLUMNS, row, strict=True))
    for column in _JSON_COLUMNS:
        if values[column] is not None:
            values[column] = json.loads(values[column])
    values["data_removed"] = values["data_removed"] == "1"
    values["logs"] = values["logs"] or ""
    values["extra"] = values["extra"] or {}
    if values["input"] is None:
        values["input"] = {}
    return PredictionRecord(**values)


def _write_atomic(target: Path, data: bytes, *, fsync: bool) -> None:
    # Written aside and renamed into place: a reader never sees half a file, whenever the process dies.
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
    with open(tmp, "xb") as handle:
        handle.write(data)
        handle.flush()
        if fsync:
            os.fsync(handle.fileno())
    os.replace(tmp, target)


def _fsync_dir(folder: Path) -> None:
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
