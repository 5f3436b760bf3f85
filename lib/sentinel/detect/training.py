"""Fit a model bundle from clean readings: valid ranges, interval, kind, then the model and threshold.

Input is a pandas frame of clean readings (``history.load_clean`` produces it with Spark);
training itself runs on the driver. :func:`fit_bundle` first learns each feature's valid range
(``detect.ranges``; readings outside it are dropped and counted), infers the sampling interval
where ``window.interval_s = 0`` (``detect.schedule``), picks the detector (``model.kind``,
:func:`choose_kind`), then trains either the autoencoder (its schedule fitted to the amount of
history: ``schedule.adapt_schedule``) or the cross-channel residual detector
(``detect.residual``). Scores for calibration come from :mod:`sentinel.scoring`, the same code the
stream uses.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from sentinel.detect import scoring
from sentinel.config import Settings
from sentinel.detect.model import (Bundle, build_autoencoder, fingerprint, keras_module, library_versions,
                            new_version, save_bundle)
from sentinel.detect import rules
from sentinel.detect.error_model import fit_error_model
from sentinel.detect.ranges import clean_frame
from sentinel.detect.schedule import GAP_INTERVALS, TrainingDataError, adapt_schedule, infer_interval
from sentinel.detect.threshold import calibrate
from sentinel.detect.windows import NS_PER_S, Scaler, sensor_windows

log = logging.getLogger("sentinel.train")

MIN_TRAIN_WINDOWS = 64
MIN_VALIDATION_WINDOWS = 32
# Validation score quantiles kept in the manifest for drift checks (lifecycle.drift): the
# deciles are equal-frequency bins for a PSI, the upper ones the tail for quantile ratios.
QUANTILE_PROBS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 0.999)
NEAR_SEVERITY = 0.8  # a reading is "near the threshold" from this severity (score / threshold) to below 1
MIN_SENSOR_QUANTILE_WINDOWS = 200  # fewer validation windows: the sensor's quantiles are not stored
# model.kind = "auto": the autoencoder needs this many readings of a sensor (weeks of 5-minute
# readings: thousands); with fewer, and two or more channels, the residual detector is used.
AUTO_AE_MIN_READINGS = 2000

__all__ = ["TrainingDataError", "fit_bundle", "choose_kind", "resolve_timing"]


@dataclass
class WindowSet:
    windows: np.ndarray       # (m, W, F)
    times: np.ndarray         # (m, W) ns
    sensors: np.ndarray       # (m,)
    labelled: np.ndarray      # (m,) bool: window contains a labelled anomaly


def build_windows(frame: pd.DataFrame, features: list[str], length: int, max_gap_s: int,
                  stride: int = 1, label_col: str | None = None) -> WindowSet:
    """All windows of every sensor (columns ``sensor_id``, ``event_time`` + features)."""
    parts = []
    for sid, g in frame.groupby("sensor_id", sort=True):
        t = g["event_time"].to_numpy(dtype="datetime64[ns]").astype(np.int64)
        v = g[features].to_numpy(dtype=np.float64)
        w, wt, end_idx = sensor_windows(t, v, length, int(round(max_gap_s * NS_PER_S)), stride)
        if label_col and label_col in g:
            lab = g[label_col].to_numpy()
            order = np.argsort(t, kind="stable")
            rank = np.empty_like(order)
            rank[order] = np.arange(order.size)
            lab_sorted = lab[order].astype(bool)
            csum = np.concatenate([[0], np.cumsum(lab_sorted)])
            end_rank = rank[end_idx]
            labelled = (csum[end_rank + 1] - csum[np.maximum(end_rank + 1 - length, 0)]) > 0
        else:
            labelled = np.zeros(len(w), dtype=bool)
        parts.append(WindowSet(w, wt, np.full(len(w), str(sid), dtype=object), labelled))
    if not parts:
        return WindowSet(np.empty((0, length, len(features))), np.empty((0, length), np.int64),
                         np.empty(0, dtype=object), np.empty(0, dtype=bool))
    return WindowSet(*(np.concatenate([getattr(p, f) for p in parts]) for f in
                       ("windows", "times", "sensors", "labelled")))


@dataclass
class Split:
    windows: WindowSet
    train_idx: np.ndarray     # normal windows before the cut, every stride-th (before subsampling)
    val_idx: np.ndarray       # normal windows after the cut
    cut: pd.Timestamp


def split_windows(frame: pd.DataFrame, settings: Settings, label_col: str | None = None) -> Split:
    """All windows of the history and the time split into training and validation windows.

    The last ``model.validation_fraction`` of the time span validates; windows that straddle
    the cut are dropped so no reading is in both sets; windows holding a labelled anomaly are
    in neither.
    """
    w, ms = settings.window, settings.model
    t = frame["event_time"]
    cut = t.min() + (t.max() - t.min()) * (1 - ms.validation_fraction)
    cut_ns = pd.Timestamp(cut).value
    ws = build_windows(frame, list(settings.data.features), w.length, w.max_gap_s, 1, label_col)
    if len(ws.windows) == 0:
        raise TrainingDataError(f"no window of {w.length} readings without a gap over window.max_gap_s "
                                f"({w.max_gap_s:g} s) in the history: give more history, or set "
                                f"window.interval_s = 0 and window.max_gap_s = 0 to take them from the data")
    start_ns, end_ns = ws.times[:, 0], ws.times[:, -1]
    normal = ~ws.labelled
    train_idx = np.nonzero(normal & (end_ns < cut_ns))[0][:: w.stride]
    val_idx = np.nonzero(normal & (start_ns >= cut_ns))[0]
    return Split(ws, train_idx, val_idx, cut)


def split_validation(start_ns: np.ndarray, end_ns: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Split validation windows by time at the middle of their span: (older half, newer half,
    cut in ns). Windows straddling the cut are in neither, so no reading is in both halves."""
    mid = int(start_ns.min() + (end_ns.max() - start_ns.min()) // 2)
    return idx[end_ns < mid], idx[start_ns >= mid], mid


def score_params(settings: Settings) -> dict:
    """How the bundle turns step errors into scores (``manifest["score"]``)."""
    th = settings.threshold
    return {"reduce": th.reduce, "recent_steps": th.recent_steps, "recent_ratio": th.recent_ratio}


def calibrate_bundle(bundle: Bundle, val_errors: np.ndarray, val_sensors: np.ndarray, val_times: np.ndarray,
                     settings: Settings) -> dict:
    """Fit the error model (Mahalanobis) and the threshold from validation windows' step errors.

    Sets ``bundle.error_model``, ``bundle.threshold`` and ``bundle.manifest["score"]``; scores
    come from ``scoring.reduce_errors``, the function every scoring path uses. Returns the
    calibration windows' ``scores`` and ``sensors``. Also used by benchmarks/quality.py to
    compare scoring variants on one trained network.
    """
    th = settings.threshold
    kept = {k: v for k, v in bundle.manifest.get("score", {}).items() if k == "stuck_limit"}
    bundle.manifest["score"] = score_params(settings) | kept
    bundle.error_model = None
    cal = np.arange(len(val_errors))
    if th.reduce == "mahalanobis":
        # The error model is fitted on the older half of the validation span and the threshold
        # calibrated on the newer half (windows straddling the cut dropped): calibrating on the
        # windows the covariance was fitted on would under-estimate their distances.
        fit, cal, mid_ns = split_validation(val_times[:, 0], val_times[:, -1], cal)
        if len(fit) < MIN_VALIDATION_WINDOWS or len(cal) < MIN_VALIDATION_WINDOWS:
            raise TrainingDataError(
                f"too little validation history for the Mahalanobis error model: {len(fit)} fitting and "
                f"{len(cal)} calibration windows (need at least {MIN_VALIDATION_WINDOWS} each); give more "
                f"days of data, a larger model.validation_fraction, or threshold.reduce = \"mean\"")
        bundle.error_model = fit_error_model(val_errors[fit])
        bundle.manifest["score"]["error_model"] = bundle.error_model.params | {
            "fit_windows": int(len(fit)), "calibration_windows": int(len(cal)),
            "split_time": str(pd.Timestamp(mid_ns, tz="UTC"))}
        log.info("Mahalanobis error model fitted on %d validation windows (Ledoit-Wolf shrinkage %.3f); "
                 "threshold calibrated on the next %d", len(fit), bundle.error_model.params["shrinkage"], len(cal))
    scores = scoring.reduce_errors(val_errors[cal], th.reduce, bundle.error_model).astype(np.float64)
    bundle.threshold = calibrate(scores, val_sensors[cal], th.method, th.k, th.quantile, th.margin, th.risk,
                                 th.init_quantile)
    return {"scores": scores, "sensors": val_sensors[cal]}


def score_quantiles(scores: np.ndarray, sensors: np.ndarray, thresholds: np.ndarray) -> dict:
    """Validation score distribution for drift checks (``manifest["validation"]["score_quantiles"]``).

    Returns ``{"probs": QUANTILE_PROBS, "near_severity": NEAR_SEVERITY, "global": {"n", "q",
    "near_rate"}, "per_sensor": {sensor: {"n", "q", "near_rate"}}}``: ``q`` the scores at
    ``probs``, ``near_rate`` the share of windows with severity in [NEAR_SEVERITY, 1) (a score the
    recent rule capped sits at exactly 1: a fading alarm, not a reading near it). Sensors
    with fewer than ``MIN_SENSOR_QUANTILE_WINDOWS`` validation windows have no entry (drift then
    compares them with the global figures).
    """
    scores = np.asarray(scores, dtype=np.float64)
    sev = scores / np.where(np.asarray(thresholds) > 0, thresholds, np.nan)
    ids = np.asarray(sensors).astype(str)

    def summary(mask: np.ndarray) -> dict:
        s, v = scores[mask], sev[mask]
        return {"n": int(mask.sum()), "q": [float(x) for x in np.quantile(s, QUANTILE_PROBS)],
                "near_rate": float(((v >= NEAR_SEVERITY) & (v < 1.0)).mean())}

    per = {str(sid): summary(ids == sid) for sid in np.unique(ids)
           if (ids == sid).sum() >= MIN_SENSOR_QUANTILE_WINDOWS}
    return {"probs": list(QUANTILE_PROBS), "near_severity": NEAR_SEVERITY,
            "global": summary(np.ones(scores.size, dtype=bool)), "per_sensor": per}


def resolve_timing(frame: pd.DataFrame, settings: Settings) -> tuple[Settings, dict]:
    """``window.interval_s = 0``: the interval inferred from the data (median step per sensor);
    ``window.max_gap_s = 0``: ``GAP_INTERVALS`` intervals. A configured interval more than twice
    off the data's is kept but logged. Returns the settings to train with and what was decided."""
    w = settings.window
    t = frame["event_time"].to_numpy(dtype="datetime64[ns]").astype(np.int64)
    inferred = infer_interval(t, frame["sensor_id"].astype(str).to_numpy())
    interval = float(w.interval_s) or inferred
    gap = float(w.max_gap_s) or GAP_INTERVALS * interval
    note = ""
    if w.interval_s and not 0.5 <= inferred / w.interval_s <= 2.0:
        note = (f"window.interval_s is {w.interval_s:g} s but the history's readings come every {inferred:g} s: "
                f"set window.interval_s = 0 to take it from the data")
        log.warning(note)
    if gap < interval:
        raise TrainingDataError(f"window.max_gap_s ({gap:g} s) is shorter than the sampling interval ({interval:g} s): "
                                f"set it to at least one interval, or 0 for {GAP_INTERVALS} intervals")
    timing = {"interval_s": interval, "inferred_interval_s": inferred, "max_gap_s": gap,
              "interval_from": "configured" if w.interval_s else "data"}
    if note:
        timing["note"] = note
    return settings.replace(**{"window.interval_s": interval, "window.max_gap_s": gap}), timing


def choose_kind(frame: pd.DataFrame, settings: Settings) -> str:
    """The detector to train: ``model.kind``; for ``auto`` the residual detector over a sensor's
    features when there are two or more features and the largest sensor has fewer than
    ``AUTO_AE_MIN_READINGS`` readings (too little for the autoencoder: the small-data benchmark),
    else the autoencoder. A network's zone model (one feature, sensors as channels) is chosen
    explicitly with ``model.kind = "residual"`` (docs/detection.md: which detector when)."""
    kind = settings.model.kind
    if kind != "auto":
        return kind
    counts = frame["sensor_id"].astype(str).value_counts()
    if len(settings.data.features) >= 2 and int(counts.max()) < AUTO_AE_MIN_READINGS:
        return "residual"
    return "autoencoder"


def fit_bundle(frame: pd.DataFrame, settings: Settings, out_dir: str | Path | None = None,
               label_col: str | None = None, cleaning: dict | None = None,
               registry: pd.DataFrame | None = None) -> tuple[Path, dict]:
    """Train and write a bundle; return its path and the training report (also saved).

    Args:
        frame: clean readings: ``sensor_id``, ``event_time`` (UTC), the features, the label column.
        settings: the run's settings.
        out_dir: the bundle folder; if not given, ``<model.dir>/<model.name>/<version>``.
        label_col: 0/1 label column; labelled readings are left out of training.
        cleaning: the history cleaning report (``history.load_clean``), recorded in the manifest;
            its ``valid_ranges`` (if any) are the ranges applied.
        registry: the sensor registry (``residual.zones = "registry"``: the zones); if not given,
            ``sinks.sensors_file`` is read when needed.
    """
    t_start = time.time()
    feats = list(settings.data.features)
    if label_col and label_col in frame:
        n_labelled = int(frame[label_col].fillna(0).astype(bool).sum())
    else:
        label_col, n_labelled = None, 0
    cleaning = dict(cleaning or {})
    try:
        frame, ranges, n_out = clean_frame(frame, feats, settings.data.valid_ranges, cleaning.get("valid_ranges"))
    except ValueError as exc:
        raise TrainingDataError(str(exc)) from None
    if n_out:
        log.info("%d readings outside the valid ranges dropped (%s)", n_out,
                 ", ".join(f"{f} [{lo:g}, {hi:g}]" for f, (lo, hi) in ranges.items()))
        cleaning["out_of_learned_range"] = cleaning.get("out_of_learned_range", 0) + n_out
    cleaning["valid_ranges"] = ranges
    if len(frame) == 0:
        raise TrainingDataError("no reading is left after cleaning: check the history's features and "
                                "data.valid_ranges")
    settings, timing = resolve_timing(frame, settings)
    kind = choose_kind(frame, settings)
    log.info("detector: %s (model.kind = %s); interval %g s (%s), max gap %g s", kind, settings.model.kind,
             timing["interval_s"], timing["interval_from"], timing["max_gap_s"])
    if kind == "residual":
        return _fit_residual_bundle(frame, settings, out_dir, label_col, n_labelled, cleaning, timing,
                                    registry, t_start)
    settings, schedule = _schedule(frame, settings, label_col, timing["interval_s"])
    w, ms = settings.window, settings.model
    keras = keras_module()

    split = split_windows(frame, settings, label_col)
    ws, train_idx, val_idx, cut = split.windows, split.train_idx, split.val_idx, split.cut
    cut_ns = pd.Timestamp(cut).value
    start_ns = ws.times[:, 0]
    log.info("windows: %d total, %d contain labelled anomalies (excluded), %d train (stride %d), "
             "%d validation", len(ws.windows), int(ws.labelled.sum()), len(train_idx), w.stride, len(val_idx))
    if len(train_idx) < MIN_TRAIN_WINDOWS or len(val_idx) < MIN_VALIDATION_WINDOWS:
        raise TrainingDataError(
            f"too little normal history to train: {len(train_idx)} training and {len(val_idx)} "
            f"validation windows of {w.length} readings (need at least {MIN_TRAIN_WINDOWS} and "
            f"{MIN_VALIDATION_WINDOWS}); give more days of data or a shorter window.length")
    rng = np.random.default_rng(ms.seed)
    if len(train_idx) > ms.max_train_windows:
        train_idx = np.sort(rng.choice(train_idx, ms.max_train_windows, replace=False))
        log.info("subsampled training windows to model.max_train_windows=%d", ms.max_train_windows)

    # Scaler from the normal training readings only (the newest step of each window covers them).
    train_rows = frame[frame["event_time"] < cut]
    if label_col:
        train_rows = train_rows[~train_rows[label_col].fillna(0).astype(bool)]
    scaler = Scaler.fit(feats, train_rows["sensor_id"].astype(str).to_numpy(), train_rows[feats].to_numpy())

    n_context = 3 if w.calendar else 0
    model = build_autoencoder(w.length, len(feats), n_context, ms.cell, ms.units, ms.layers,
                              ms.latent, ms.learning_rate, ms.seed)
    manifest = {
        "name": ms.name, "version": new_version(), "features": feats, "units": settings.data.units,
        "sensor_field": settings.data.sensor_field, "time_field": settings.data.time_field,
        "model": {"kind": "autoencoder"},
        "window": {"length": w.length, "stride": w.stride, "interval_s": w.interval_s,
                   "max_gap_s": w.max_gap_s, "calendar": w.calendar},
        "architecture": {"cell": ms.cell, "units": ms.units, "layers": ms.layers, "latent": ms.latent,
                         "parameters": int(model.count_params())},
        "score": score_params(settings),
        "training": {"epochs_max": ms.epochs, "batch_size": ms.batch_size, "patience": ms.patience,
                     "learning_rate": ms.learning_rate, "seed": ms.seed,
                     "validation_fraction": ms.validation_fraction, "split_time": str(cut),
                     "timing": timing, "schedule": list(schedule)},
        "valid_ranges": ranges,
        "data": {"fingerprint": fingerprint(frame[["sensor_id", "event_time"] + feats]),
                 "rows": int(len(frame)), "sensors": int(frame["sensor_id"].nunique()),
                 "start": str(frame["event_time"].min()), "end": str(frame["event_time"].max()),
                 "labelled_rows": n_labelled,
                 "cleaning": cleaning or {}},
        "libraries": library_versions(),
        "created_at": pd.Timestamp.now(tz="UTC").isoformat(),
    }
    bundle = Bundle("", model, scaler, None, manifest)  # threshold set after calibration
    limit = _stuck_limit(train_rows, feats, settings)

    def inputs(idx):
        return scoring.model_inputs(bundle, ws.windows[idx], ws.times[idx], ws.sensors[idx])

    x_train, x_val = inputs(train_idx), inputs(val_idx)
    feed = (lambda x: {"values": x[0], "context": x[1]}) if n_context else (lambda x: x[0])
    log.info("training %s autoencoder (%d parameters) on %d windows, up to %d epochs",
             ms.cell.upper(), model.count_params(), len(train_idx), ms.epochs)
    stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=ms.patience, restore_best_weights=True)
    hist = model.fit(feed(x_train), x_train[0], validation_data=(feed(x_val), x_val[0]),
                     epochs=ms.epochs, batch_size=ms.batch_size, shuffle=True, callbacks=[stop],
                     verbose=2)

    # Calibrate on validation windows with the production scoring functions (one forward pass).
    val_errors = scoring.step_errors(bundle, ws.windows[val_idx], ws.times[val_idx], ws.sensors[val_idx])
    cal = calibrate_bundle(bundle, val_errors, ws.sensors[val_idx], ws.times[val_idx], settings)
    threshold, val_scores = bundle.threshold, cal["scores"]
    if limit is not None:  # after calibration: the rule applies to scoring, not to the threshold's scores
        manifest["score"]["stuck_limit"] = limit
    manifest["validation"] = {
        "windows": int(len(val_scores)), "score_mean": float(val_scores.mean()),
        "score_p50": float(np.quantile(val_scores, 0.5)), "score_p99": float(np.quantile(val_scores, 0.99)),
        "score_max": float(val_scores.max()), "threshold": threshold.value,
        "false_alarm_rate": float((val_scores > threshold.for_sensors(cal["sensors"])).mean()),
        "best_val_loss": float(min(hist.history["val_loss"])), "epochs_run": len(hist.history["loss"]),
        "score_quantiles": score_quantiles(val_scores, cal["sensors"], threshold.for_sensors(cal["sensors"])),
    }
    if label_col:
        lab_idx = np.nonzero(ws.labelled & (start_ns >= cut_ns))[0]
        if lab_idx.size:
            s = scoring.score_windows(bundle, ws.windows[lab_idx], ws.times[lab_idx], ws.sensors[lab_idx])
            manifest["validation"]["labelled_windows_flagged"] = float((s > threshold.for_sensors(ws.sensors[lab_idx])).mean())

    out = Path(out_dir) if out_dir else Path(ms.dir) / ms.name / manifest["version"]
    save_bundle(out, model, scaler, threshold, manifest, bundle.error_model)
    report = {"bundle": str(out), "history": hist.history, "threshold": json.loads(threshold.to_json()),
              "validation": manifest["validation"], "cleaning": cleaning or {},
              "seconds": round(time.time() - t_start, 1)}
    if settings.train.report:
        write_report(out, report, val_scores, threshold.value)
    log.info("bundle written to %s (threshold %.4g, %s)", out, threshold.value, threshold.method)
    return out, report


def _schedule(frame: pd.DataFrame, settings: Settings, label_col: str | None,
              interval_s: float) -> tuple[Settings, tuple[str, ...]]:
    """The autoencoder's schedule fitted to the history (``schedule.adapt_schedule``): settings to
    train with and the notes saying what changed (logged, and kept in the manifest)."""
    normal = frame if not label_col else frame[~frame[label_col].fillna(0).astype(bool)]
    counts = normal["sensor_id"].astype(str).value_counts()
    w, ms = settings.window, settings.model
    sch = adapt_schedule(int(counts.max()) if len(counts) else 0, w.length, w.stride, ms.epochs,
                         ms.validation_fraction, ms.batch_size, ms.patience, interval_s, len(counts))
    for note in sch.notes:
        log.info("schedule: %s", note)
    return settings.replace(**{"window.length": sch.length, "window.stride": sch.stride,
                               "model.validation_fraction": sch.validation_fraction,
                               "model.batch_size": sch.batch_size, "model.epochs": sch.epochs,
                               "model.patience": sch.patience}), sch.notes


def _stuck_limit(rows: pd.DataFrame, feats: list[str], settings: Settings) -> list[int] | None:
    """The stuck rule's run length per feature from normal training readings (``threshold.stuck``),
    or None when off or when it would exceed the window (the rule could never fire)."""
    if not settings.threshold.stuck or len(rows) == 0:
        return None
    ordered = rows.sort_values(["sensor_id", "event_time"])
    limit = rules.stuck_limit(ordered[feats].to_numpy(dtype=np.float64), groups=ordered["sensor_id"].astype(str).to_numpy(),
                              quantile=STUCK_QUANTILE)
    if int(limit.max()) > settings.window.length:
        log.info("stuck rule off: the history repeats values for up to %d readings, longer than a window", int(limit.max()))
        return None
    return [int(v) for v in limit]


STUCK_QUANTILE = 0.999  # the stuck limit from this quantile of the training runs (rules.stuck_limit)


def _fit_residual_bundle(frame: pd.DataFrame, settings: Settings, out_dir, label_col: str | None, n_labelled: int,
                         cleaning: dict, timing: dict, registry: pd.DataFrame | None,
                         t_start: float) -> tuple[Path, dict]:
    """Fit, calibrate and write a residual bundle (``detect.residual``)."""
    from sentinel.detect import residual
    w, ms, th = settings.window, settings.model, settings.threshold
    if registry is None and settings.residual.zones == "registry" and settings.sinks.sensors_file:
        from sentinel.store.registry import read_registry
        registry = read_registry(settings.sinks.sensors_file)
    fitted = residual.fit(frame, settings, label_col, int(round(w.interval_s * NS_PER_S)),
                          int(round(w.max_gap_s * NS_PER_S)), registry)
    det, info = fitted.detector, dict(fitted.info)
    scaler = info.pop("scaler")
    if not th.stuck:
        det.stuck_limit = {}
    feats = list(settings.data.features)
    r = settings.residual
    model_info = {"kind": "residual", "mode": det.mode}
    if det.mode == "zone":
        model_info |= {"zones": det.channels, "means": info["means"]}
    manifest = {
        "name": ms.name, "version": new_version(), "features": feats, "units": settings.data.units,
        "sensor_field": settings.data.sensor_field, "time_field": settings.data.time_field,
        "model": model_info,
        "window": {"length": int(info["window_length"]), "stride": 1, "interval_s": w.interval_s,
                   "max_gap_s": w.max_gap_s, "calendar": det.calendar, "wait_slots": w.wait_slots},
        "architecture": {"kind": "residual", "mode": det.mode, "ridge": r.ridge, "folds": r.folds,
                         "groups": len(det.groups),
                         "channels": int(sum(len(c) for c in det.channels.values())),
                         "parameters": int(sum(g.theta.size for g in det.groups.values()))},
        "score": {"reduce": "residual", "recent_steps": 0, "recent_ratio": 0.0, "scales": det.scales,
                  "mask_z": det.mask_z, "exclude_z": det.exclude_z, "stuck": bool(det.stuck_limit),
                  "drift": bool(det.drift)},
        "training": {"seed": ms.seed, "timing": timing, "residual": {k: v for k, v in info.items() if k != "means"}},
        "valid_ranges": cleaning.get("valid_ranges", {}),
        "data": {"fingerprint": fingerprint(frame[["sensor_id", "event_time"] + feats]),
                 "rows": int(len(frame)), "sensors": int(frame["sensor_id"].nunique()),
                 "start": str(frame["event_time"].min()), "end": str(frame["event_time"].max()),
                 "labelled_rows": n_labelled, "cleaning": cleaning},
        "libraries": library_versions(),
        "created_at": pd.Timestamp.now(tz="UTC").isoformat(),
    }
    scores, sensors = fitted.cal_scores, fitted.cal_sensors
    try:
        threshold = calibrate(scores, sensors, th.method, th.k, th.quantile, th.margin, th.risk, th.init_quantile)
    except ValueError as exc:
        raise TrainingDataError(str(exc)) from None
    thr = threshold.for_sensors(sensors)
    manifest["validation"] = {
        "windows": int(len(scores)), "calibration": f"{r.folds}-fold time cross-fit",
        "score_mean": float(scores.mean()), "score_p50": float(np.quantile(scores, 0.5)),
        "score_p99": float(np.quantile(scores, 0.99)), "score_max": float(scores.max()),
        "threshold": threshold.value, "false_alarm_rate": float((scores > thr).mean()),
        "score_quantiles": score_quantiles(scores, sensors, thr),
    }
    out = Path(out_dir) if out_dir else Path(ms.dir) / ms.name / manifest["version"]
    save_bundle(out, det, scaler, threshold, manifest)
    report = {"bundle": str(out), "kind": "residual", "threshold": json.loads(threshold.to_json()),
              "validation": manifest["validation"], "cleaning": cleaning, "residual": manifest["training"]["residual"],
              "seconds": round(time.time() - t_start, 1)}
    if settings.train.report:
        (out / "report.json").write_text(json.dumps(report, indent=1, default=float))
    log.info("residual bundle (%s mode, %d channels) written to %s (threshold %.4g, %s)", det.mode,
             manifest["architecture"]["channels"], out, threshold.value, threshold.method)
    return out, report


def write_report(out: Path, report: dict, val_scores: np.ndarray, threshold: float) -> None:
    """Loss curve and validation error histogram (PNG) plus report.json in the bundle."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    (out / "report.json").write_text(json.dumps(report, indent=1, default=float))
    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    ax[0].plot(report["history"]["loss"], label="train")
    ax[0].plot(report["history"]["val_loss"], label="validation")
    ax[0].set(title="Reconstruction loss (MSE, scaled)", xlabel="epoch", yscale="log")
    ax[0].legend()
    ax[1].hist(val_scores, bins=80, color="tab:blue", alpha=0.8)
    ax[1].axvline(threshold, color="tab:red", label=f"threshold {threshold:.3g}")
    ax[1].set(title="Validation window scores", xlabel="score", yscale="log")
    ax[1].legend()
    fig.tight_layout()
    fig.savefig(out / "training_report.png", dpi=90)
    plt.close(fig)
