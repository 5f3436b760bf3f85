"""Fit a model bundle from clean readings: windows, time split, scaler, autoencoder, threshold.

Input is a pandas frame of clean readings (``history.load_clean`` produces it with Spark);
training itself runs on the driver with Keras. Scores for calibration come from
:mod:`sentinel.scoring`, the same code the stream uses.
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
from sentinel.detect.error_model import fit_error_model
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


class TrainingDataError(ValueError):
    """Not enough usable history to train; the message says how much more is needed."""


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
        w, wt, end_idx = sensor_windows(t, v, length, max_gap_s * NS_PER_S, stride)
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
    bundle.manifest["score"] = score_params(settings)
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
    bundle.threshold = calibrate(scores, val_sensors[cal], th.method, th.k, th.quantile, th.margin)
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


def fit_bundle(frame: pd.DataFrame, settings: Settings, out_dir: str | Path | None = None,
               label_col: str | None = None, cleaning: dict | None = None) -> tuple[Path, dict]:
    """Train and write a bundle; return its path and the training report (also saved)."""
    t_start = time.time()
    feats = list(settings.data.features)
    w, ms = settings.window, settings.model
    keras = keras_module()
    if label_col and label_col in frame:
        n_labelled = int(frame[label_col].fillna(0).astype(bool).sum())
    else:
        label_col, n_labelled = None, 0

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
        "window": {"length": w.length, "stride": w.stride, "interval_s": w.interval_s,
                   "max_gap_s": w.max_gap_s, "calendar": w.calendar},
        "architecture": {"cell": ms.cell, "units": ms.units, "layers": ms.layers, "latent": ms.latent,
                         "parameters": int(model.count_params())},
        "score": score_params(settings),
        "training": {"epochs_max": ms.epochs, "batch_size": ms.batch_size, "patience": ms.patience,
                     "learning_rate": ms.learning_rate, "seed": ms.seed,
                     "validation_fraction": ms.validation_fraction, "split_time": str(cut)},
        "data": {"fingerprint": fingerprint(frame[["sensor_id", "event_time"] + feats]),
                 "rows": int(len(frame)), "sensors": int(frame["sensor_id"].nunique()),
                 "start": str(frame["event_time"].min()), "end": str(frame["event_time"].max()),
                 "labelled_rows": n_labelled,
                 "cleaning": cleaning or {}},
        "libraries": library_versions(),
        "created_at": pd.Timestamp.now(tz="UTC").isoformat(),
    }
    bundle = Bundle("", model, scaler, None, manifest)  # threshold set after calibration

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
