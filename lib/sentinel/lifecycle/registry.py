"""The model registry: versions, the promoted pointer, promotion history (local or ``s3://``).

A registry is the folder training writes to, ``models/<name>/`` (or ``s3://bucket/prefix``):

    <version>/            one bundle per folder (manifest.json marks it complete)
    promoted              the pointer: which version the deploy job serves (``detect.model``)
    promotions.jsonl      one JSON line per promotion or rollback, oldest first

Promotion is one atomic write of the pointer (local: a temporary file in the same folder, then
``os.replace``; S3: a single PUT of the object), so a deploy job reading it between micro-batches
sees the old version or the new one, never a partial file. The history line is appended after
the pointer is written; on S3 the history is rewritten whole (S3 has no append), so two
operators promoting at the very same moment may lose one history line, never the pointer.
Rollback goes back to the version promoted before the current one (the history read as a stack).
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import uuid
from pathlib import Path

import pandas as pd

from sentinel.config import Settings
from sentinel.detect.model import (BUNDLE_FILES, POINTER, BundleError, check_compatible, is_version_name,
                                   local_versions, pointer_text, read_pointer_record)
from sentinel.store.storage import is_s3_url, join_key, list_keys, parse_s3_url, s3_client

log = logging.getLogger("sentinel.registry")

HISTORY = "promotions.jsonl"
LIST_COLUMNS = ["version", "created_at", "promoted", "parent", "data_start", "data_end", "rows", "sensors",
                "fingerprint", "threshold", "verdict", "false_alarms_challenger", "false_alarms_champion",
                "recall_challenger", "recall_champion", "complete"]


class LifecycleError(ValueError):
    """A registry, retrain or drift operation cannot be done; the message names the thing and
    the fix (the CLI prints it and exits with code 2, changing nothing)."""


def registry_url(settings: Settings) -> str:
    """``lifecycle.registry``, or ``<model.dir>/<model.name>`` (where ``sentinel train`` writes)."""
    return settings.lifecycle.registry or str(Path(settings.model.dir) / settings.model.name)


def now_utc() -> str:
    return pd.Timestamp.now(tz="UTC").isoformat()


class Registry:
    """One registry folder or prefix. Every method reads the current state (no caching), so
    several processes (the deploy job, an operator, a scheduled retrain) can share it."""

    def __init__(self, url: str | Path):
        self.url = str(url).rstrip("/")
        self.s3 = is_s3_url(self.url)
        if self.s3:
            self.bucket, self.prefix = parse_s3_url(self.url)
            self._client = s3_client()
        else:
            self.root = Path(self.url).expanduser().resolve()
            if (self.root / "manifest.json").is_file():
                raise LifecycleError(f"{self.root} is one bundle, not a registry of versions: pass its parent "
                                    f"folder ({self.root.parent}) as --registry")

    def __repr__(self) -> str:
        return f"Registry({self.url!r})"

    # ------------------------------------------------------------ storage primitives
    def _read(self, name: str) -> str | None:
        if self.s3:
            from botocore.exceptions import ClientError
            try:
                obj = self._client.get_object(Bucket=self.bucket, Key=join_key(self.prefix, name))
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
                    return None
                raise
            return obj["Body"].read().decode("utf-8")
        try:
            return (self.root / name).read_text(encoding="utf-8")
        except FileNotFoundError:
            return None

    def _write_atomic(self, name: str, text: str) -> None:
        if self.s3:  # one PUT: S3 readers see the old object or the new one
            self._client.put_object(Bucket=self.bucket, Key=join_key(self.prefix, name),
                                    Body=text.encode("utf-8"), ContentType="application/json")
            return
        self.root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=f".{name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.root / name)  # atomic on POSIX within one file system
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def _append(self, name: str, line: str) -> None:
        if self.s3:
            self._write_atomic(name, (self._read(name) or "") + line)
            return
        with open(self.root / name, "a", encoding="utf-8") as f:  # one short write in append mode
            f.write(line)

    # ------------------------------------------------------------ reading
    def versions(self) -> list[str]:
        """Complete versions (holding manifest.json), oldest name first (names are UTC times)."""
        if not self.s3:
            return [p.name for p in local_versions(self.root)]
        base = self.prefix + "/" if self.prefix else ""
        names = {k[len(base):].split("/")[0] for k in list_keys(self._client, self.bucket, base)
                 if k.endswith("/manifest.json") and k[len(base):].count("/") == 1}
        return sorted(n for n in names if not n.startswith("."))

    def ref(self, version: str) -> str:
        """Where a version lives: an absolute path or an ``s3://`` URL."""
        return f"{self.url}/{version}" if self.s3 else str(self.root / version)

    def _require(self, version: str) -> None:
        if not is_version_name(version) or version not in self.versions():
            known = self.versions()
            hint = f"known: {', '.join(known[-5:])}" if known else "it holds none yet"
            raise LifecycleError(f"registry {self.url} has no version {version!r} ({hint}): "
                                f"`sentinel models list` shows them")

    def manifest(self, version: str) -> dict:
        self._require(version)
        return json.loads(self._read(f"{version}/manifest.json") or "{}")

    def missing_files(self, version: str, manifest: dict | None = None) -> list[str]:
        manifest = manifest if manifest is not None else self.manifest(version)
        need = list(BUNDLE_FILES)
        if manifest.get("score", {}).get("reduce") == "mahalanobis":
            need.append("error_model.json")
        if self.s3:
            have = {k.rsplit("/", 1)[-1] for k in list_keys(self._client, self.bucket, join_key(self.prefix, version) + "/")}
        else:
            have = {p.name for p in (self.root / version).iterdir() if p.is_file()}
        return [f for f in need if f not in have]

    def pointer(self) -> dict | None:
        """The pointer record (``version``, ``promoted_at``, ``promoted_by``, ``previous`` ...) or None."""
        return read_pointer_record(self.url)

    def promoted(self) -> str | None:
        rec = self.pointer()
        return None if rec is None else rec["version"]

    def serving(self) -> str | None:
        """What a deploy job started on this registry loads: the promoted version, else the newest."""
        versions = self.versions()
        return self.promoted() or (versions[-1] if versions else None)

    def history(self) -> list[dict]:
        """Promotions and rollbacks, oldest first (unreadable lines are skipped with a warning)."""
        out = []
        for i, line in enumerate((self._read(HISTORY) or "").splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                log.warning("skipping line %d of %s/%s: not JSON", i, self.url, HISTORY)
                continue
            if isinstance(rec, dict) and isinstance(rec.get("version"), str):
                out.append(rec)
        return out

    def list(self) -> pd.DataFrame:
        """One row per version (``LIST_COLUMNS``): lineage, data window, figures, promoted or not."""
        promoted, rows = self.serving(), []
        for v in self.versions():
            m = json.loads(self._read(f"{v}/manifest.json") or "{}")
            rows.append(version_row(v, m, v == promoted, not self.missing_files(v, m)))
        return pd.DataFrame(rows, columns=LIST_COLUMNS)

    def show(self, version: str) -> dict:
        """A version's manifest with its registry status (promoted, complete, promotions)."""
        m = self.manifest(version)
        return {"version": version, "registry": self.url, "promoted": version == self.serving(),
                "missing_files": self.missing_files(version, m),
                "promotions": [h for h in self.history() if h.get("version") == version], "manifest": m}

    # ------------------------------------------------------------ writing
    def promote(self, version: str, by: str, reason: str = "", force: bool = False,
                action: str = "promote") -> dict:
        """Point the registry at ``version`` (one atomic write) and record it in the history.

        Refuses, with a :class:`LifecycleError` and nothing changed, a version that is unknown
        or incomplete, or (unless ``force``) one the running job could not switch to
        (``detect.model.check_compatible``). Promoting the version already promoted changes
        nothing. Returns the pointer record, with ``changed`` False when nothing was written.
        """
        self._require(version)
        manifest = self.manifest(version)
        missing = self.missing_files(version, manifest)
        if missing:
            raise LifecycleError(f"version {version} in {self.url} lacks {', '.join(missing)}: re-train or "
                                f"re-upload it before promoting")
        try:
            current, pointed = self.serving(), self.promoted()
        except BundleError as exc:  # a corrupt pointer: promoting is how it is repaired
            log.warning("%s; replacing it", exc)
            current = pointed = None
        if current == version and pointed == version:
            return {**(self.pointer() or {}), "changed": False}
        if current and current != version and not force:
            why = check_compatible(self.manifest(current), manifest)
            if why:
                raise LifecycleError(f"{why}; pass --force to promote it anyway (a running job keeps {current} "
                                    f"until restarted)")
        record = {"version": version, "previous": current, "promoted_at": now_utc(), "promoted_by": by,
                  "action": action, "reason": reason}
        self._write_atomic(POINTER, pointer_text(**record))
        self._append(HISTORY, json.dumps(record, sort_keys=True) + "\n")
        log.info("%s: %s %s (was %s)", self.url, action, version, current)
        return {**record, "changed": True}

    def rollback(self, by: str, reason: str = "", force: bool = False) -> dict:
        """Promote again the version promoted before the current one (the history as a stack:
        promote pushes, rollback pops; two rollbacks after A, B, C lead back to A)."""
        current = self.promoted()
        if current is None:
            raise LifecycleError(f"registry {self.url} has no promoted version to roll back from: promote one "
                                f"with `sentinel models promote VERSION`")
        stack = promotion_stack(self.history())
        if not stack or stack[-1] != current:
            stack.append(current)  # the pointer was written by hand
        if len(stack) < 2:
            raise LifecycleError(f"nothing to roll back to: {current} is the first version promoted in {self.url}")
        return self.promote(stack[-2], by, reason or f"rollback from {current}", force=force, action="rollback")

    def pin_serving(self, by: str) -> str | None:
        """Without a pointer the deploy job serves the newest version, so a challenger written
        into the registry would be served unpromoted: pin the version served now first."""
        if self.promoted() is not None:
            return self.promoted()
        versions = self.versions()
        if not versions:
            return None
        self.promote(versions[-1], by, "pinned before a challenger was added", force=True, action="pin")
        return versions[-1]

    def staging(self) -> Path:
        """A folder to build a new version in: inside the registry (same file system, hidden,
        so an ``os.replace`` publishes it whole), or a temporary folder for S3."""
        if self.s3:
            return Path(tempfile.mkdtemp(prefix="sentinel-challenger-"))
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / f".staging-{uuid.uuid4().hex[:12]}"
        path.mkdir()
        return path

    def add_version(self, staged: str | Path, version: str) -> str:
        """Publish a complete bundle folder as ``version`` and return its reference. Local: one
        rename; S3: every file uploaded, ``manifest.json`` last (it marks the version complete)."""
        staged = Path(staged)
        if not is_version_name(version):
            raise LifecycleError(f"{version!r} is not a version name")
        if not (staged / "manifest.json").is_file():
            raise LifecycleError(f"{staged} holds no manifest.json: it is not a bundle")
        if version in self.versions():
            raise LifecycleError(f"registry {self.url} already has version {version}: versions are immutable")
        if self.s3:
            files = sorted(p for p in staged.rglob("*") if p.is_file())
            for path in sorted(files, key=lambda p: p.name == "manifest.json"):
                key = join_key(self.prefix, version, path.relative_to(staged).as_posix())
                self._client.upload_file(str(path), self.bucket, key)
            shutil.rmtree(staged, ignore_errors=True)
        else:
            target = self.root / version
            if staged.resolve().parent != self.root:
                tmp = self.staging()
                shutil.rmtree(tmp)
                shutil.copytree(staged, tmp)
                staged = tmp
            os.replace(staged, target)
        return self.ref(version)

    def overview(self) -> dict:
        """Everything ``/api/models`` shows: versions with their figures, pointer, history."""
        frame = self.list()
        versions = json.loads(frame.to_json(orient="records")) if len(frame) else []
        return {"registry": self.url, "promoted": self.promoted(), "serving": self.serving(),
                "pointer": self.pointer(), "versions": versions, "history": self.history()}


def promotion_stack(history: list[dict]) -> list[str]:
    """Versions promoted in turn and not rolled back, oldest first (the last one is current)."""
    stack: list[str] = []
    for rec in history:
        if rec.get("action") == "rollback":
            if stack:
                stack.pop()
            if not stack or stack[-1] != rec["version"]:
                stack.append(rec["version"])
        elif not stack or stack[-1] != rec["version"]:
            stack.append(rec["version"])
    return stack


def version_row(version: str, m: dict, promoted: bool, complete: bool) -> dict:
    """A manifest summarised to ``LIST_COLUMNS`` (older manifests lack lineage: empty cells)."""
    lin, cmp_ = m.get("lineage", {}), m.get("comparison", {})
    window = lin.get("data_window", {})
    data = m.get("data", {})
    ch, cp = cmp_.get("challenger", {}), cmp_.get("champion") or {}
    return {"version": version, "created_at": m.get("created_at"), "promoted": promoted,
            "parent": lin.get("parent"), "data_start": window.get("start", data.get("start")),
            "data_end": window.get("end", data.get("end")), "rows": data.get("rows"),
            "sensors": data.get("sensors"), "fingerprint": data.get("fingerprint"),
            "threshold": m.get("validation", {}).get("threshold"), "verdict": cmp_.get("verdict"),
            "false_alarms_challenger": ch.get("false_alarms_per_sensor_day"),
            "false_alarms_champion": cp.get("false_alarms_per_sensor_day"),
            "recall_challenger": ch.get("recall"), "recall_champion": cp.get("recall"), "complete": complete}


def models_overview(registry: str | Path) -> dict:
    """``/api/models``: the registry's versions, pointer and history (pure read)."""
    try:
        return Registry(registry).overview()
    except BundleError as exc:  # a corrupt pointer: show what is there and say so
        raise LifecycleError(str(exc)) from None
