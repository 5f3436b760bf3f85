"""Which model bundle scores each micro-batch: the hot swap, decided on the driver.

The deploy job serves a registry folder (``models/<name>``, local or ``s3://``) or one fixed
bundle. Between micro-batches the driver reads the registry's ``promoted`` pointer (one small
read, at most every ``stream.model_check_s``); when it names another version whose manifest is
compatible with the running one (same features, window length and gap rule:
``detect.model.check_compatible``), the next batch is scored with it. The decision travels to
the scoring UDF as a Spark local property set just before the batch runs
(:data:`BUNDLE_PROPERTY`): every task of that batch, on every executor, loads that bundle (once
per Python worker) and nothing else changes: the window state holds raw readings, and the new
scaler, model and thresholds apply at scoring.

Replays: the bundle of each batch is saved with the driver state (``models-<id>.json``) before
the batch runs, so a batch replayed after a crash is scored by the same version as its
first attempt, whatever the pointer says by then. A candidate that is incompatible, or that the
scoring workers fail to load (they keep the previous bundle and report the error), is refused
with one log sentence and not tried again until the pointer names another version.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass

from sentinel.stream.driver_state import DriverState

log = logging.getLogger("sentinel.stream")
BUNDLE_PROPERTY = "sentinel.bundle"          # the bundle (path or s3:// URL) tasks of this batch load
FALLBACK_PROPERTY = "sentinel.bundle.fallback"  # what a worker that cannot load it uses instead


@dataclass(frozen=True)
class Choice:
    """The bundle of one batch and the one to fall back to."""

    ref: str
    version: str
    fallback: str


class ModelSelector:
    """Pins a bundle per micro-batch (see the module doc).

    Args:
        model_ref: what the job serves: a registry folder (followed) or one bundle (fixed).
        bundle_ref: the bundle the job started with (pinned from ``model_ref``).
        manifest: that bundle's manifest.
        state: where decisions are saved per batch (:class:`DriverState`).
        check_s: read the pointer at most this often (0 = before every batch).
        read_manifest, pin: injectable for tests (``detect.model.read_manifest`` / ``pin_bundle``).
    """

    def __init__(self, model_ref: str, bundle_ref: str, manifest: dict, state: DriverState | None,
                 check_s: float = 5.0, read_manifest=None, pin=None, check=None):
        from sentinel.detect import model as m
        self.model_ref, self.state, self.check_s = str(model_ref), state, float(check_s)
        self._read_manifest = read_manifest or m.read_manifest
        self._pin = pin or m.pin_bundle
        self._check = check or m.check_compatible
        self.follows = not self._is_bundle(self.model_ref)  # a registry folder: follow its pointer
        self.current = Choice(str(bundle_ref), manifest["version"], str(bundle_ref))
        self.manifest = manifest
        self.refused: set[str] = set()
        self._last_check = 0.0
        self._decided = -1  # newest batch id a decision was made (or replayed) for
        saved = state.latest("models", at_most=10**15) if state is not None else None
        if saved is not None:  # a restart: carry on with the bundle the last run was using
            rec = json.loads(saved[1])
            self.current = Choice(rec["ref"], rec["version"], rec.get("fallback", rec["ref"]))
            self._decided = saved[0]
            try:
                self.manifest = self._read_manifest(rec["ref"])
            except Exception as exc:  # the bundle was deleted while the job was down
                log.warning("model %s that the last run used cannot be read (%s): starting with %s",
                            rec["version"], exc, manifest["version"])
                self.current, self.manifest = Choice(str(bundle_ref), manifest["version"], str(bundle_ref)), manifest

    def _is_bundle(self, ref: str) -> bool:
        try:
            return self._pin(ref) == ref.rstrip("/")
        except Exception:
            return False

    def for_batch(self, batch_id: int) -> Choice:
        """The bundle that scores ``batch_id``: the saved one for a replayed batch, else the
        current one, switched first if the pointer moved to a compatible version."""
        if self.state is not None and batch_id <= self._decided:
            saved = self.state.latest("models", at_most=batch_id)
            if saved is not None:
                rec = json.loads(saved[1])
                return Choice(rec["ref"], rec["version"], rec.get("fallback", rec["ref"]))
            return self.current
        if self.follows and time.monotonic() - self._last_check >= self.check_s:
            self._last_check = time.monotonic()
            self._maybe_switch(batch_id)
        # Saved for every batch before it runs (Spark replays only the newest, so a few are kept):
        # a replay after a restart finds the decision its first attempt made.
        self._save(batch_id)
        if self.state is not None:
            self.state.prune("models")
        self._decided = batch_id
        return self.current

    def _maybe_switch(self, batch_id: int) -> None:
        try:
            ref = self._pin(self.model_ref)
        except Exception as exc:
            log.warning("cannot read the model registry %s (%s): keeping model %s", self.model_ref, exc,
                        self.current.version)
            return
        if ref == self.current.ref or ref in self.refused:
            return
        try:
            candidate = self._read_manifest(ref)
            why = self._check(self.manifest, candidate)
        except Exception as exc:
            why = f"model at {ref} cannot be read ({exc})"
            candidate = {"version": ref}
        if why:
            log.warning("%s: keeping model %s", why, self.current.version)
            self.refused.add(ref)
            return
        log.info("batch %d: switching from model %s to %s (the registry's pointer moved)", batch_id,
                 self.current.version, candidate["version"])
        self.current = Choice(ref, candidate["version"], self.current.ref)
        self.manifest = candidate

    def refuse_loaded(self, batch_id: int, version: str, error: str) -> None:
        """The scoring workers could not load ``version`` for ``batch_id`` (they fell back):
        refuse it and serve the fallback from the next batch on."""
        if version != self.current.version:
            return
        self.refused.add(self.current.ref)
        fallback = self.current.fallback
        self.manifest = self._read_manifest(fallback)
        self.current = Choice(fallback, self.manifest["version"], fallback)
        log.warning("model %s failed to load in the scoring workers (%s): keeping model %s", version, error,
                    self.current.version)
        self._save(batch_id + 1)
        self._decided = max(self._decided, batch_id)

    def _save(self, batch_id: int) -> None:
        if self.state is not None:
            self.state.save_json("models", batch_id, {"ref": self.current.ref, "version": self.current.version,
                                                      "fallback": self.current.fallback})
