"""What the deploy job's driver keeps between micro-batches, next to Spark's checkpoint.

Two things live on the driver rather than in Spark state: the incident tracker (open incidents,
pending runs, persistence flags: a few kilobytes) and which model version scored which batch.
Both must survive a SIGKILL exactly as Spark's own state does, so they are saved per batch id
under ``<checkpoint>/sentinel/``:

    incidents-<batch_id>.json   the tracker's state after that batch
    models-<batch_id>.json      the bundle that scored that batch (written before it runs)

A batch reads the newest file *below* (incidents) or *at or below* (models) its own id, never
its own output, so a batch Spark replays after a crash starts from the same state as the first
attempt and writes the same records. Files are written to a temporary name and renamed, so a
crash leaves the old file or the new one, never half of one. Old incident states are pruned.

Local file systems only (like the alert topic's exactly-once, docs/kafka.md); for a checkpoint
on HDFS or S3 set ``stream.driver_state_dir`` to a local or shared mounted folder.
"""
from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from urllib.parse import urlparse

KEEP = 20  # incident states kept: a replay needs only the newest; the rest help diagnosis


class DriverState:
    """Per-batch files under one folder (see the module doc)."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)

    @classmethod
    def for_checkpoint(cls, checkpoint: str, override: str = "") -> "DriverState":
        """The folder for a checkpoint: ``override`` if set, else ``<checkpoint>/sentinel``.

        Raises ValueError (one sentence) for a checkpoint that is not on a local file system
        when no override is given.
        """
        if override:
            return cls(Path(override).expanduser())
        u = urlparse(checkpoint)
        if u.scheme not in ("", "file"):
            raise ValueError(f"stream.checkpoint {checkpoint} is not on a local file system, where the driver keeps "
                             f"its incident and model state: set stream.driver_state_dir to a local folder")
        return cls(Path(u.path if u.scheme == "file" else checkpoint).expanduser() / "sentinel")

    def _path(self, kind: str, batch_id: int) -> Path:
        return self.folder / f"{kind}-{int(batch_id):012d}.json"

    def ids(self, kind: str) -> list[int]:
        """Batch ids with a saved ``kind`` file, ascending."""
        if not self.folder.is_dir():
            return []
        pattern = re.compile(rf"^{re.escape(kind)}-(\d+)\.json$")
        return sorted(int(m.group(1)) for m in (pattern.match(p.name) for p in self.folder.iterdir()) if m)

    def save(self, kind: str, batch_id: int, text: str) -> None:
        """Write ``kind`` for ``batch_id`` atomically (temporary file + rename)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=f".{kind}-", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self._path(kind, batch_id))
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def latest(self, kind: str, below: int | None = None, at_most: int | None = None) -> tuple[int, str] | None:
        """The newest saved ``kind`` with id < ``below`` (or <= ``at_most``): (id, text), or None."""
        ids = self.ids(kind)
        if below is not None:
            ids = [i for i in ids if i < below]
        if at_most is not None:
            ids = [i for i in ids if i <= at_most]
        if not ids:
            return None
        return ids[-1], self._path(kind, ids[-1]).read_text(encoding="utf-8")

    def prune(self, kind: str, keep: int = KEEP) -> None:
        """Delete all but the newest ``keep`` files of ``kind``."""
        for i in self.ids(kind)[:-keep]:
            self._path(kind, i).unlink(missing_ok=True)

    def save_json(self, kind: str, batch_id: int, obj) -> None:
        self.save(kind, batch_id, json.dumps(obj, sort_keys=True))
