"""Detection metrics: point-wise and by anomaly episode.

* Point-wise: each reading's flag against its label.
* Episode-wise: a labelled episode (a run of labelled readings of one sensor, or a row of a
  ground-truth table) is *found* when any reading inside it is flagged. Flagged readings of a
  sensor are merged into detected episodes when they lie at most ``merge_gap`` apart; a detected
  episode is *true* when it overlaps a labelled episode extended by ``tolerance`` after its end
  (a window keeps an anomaly in view for W readings after it ends), otherwise it is a false
  alarm.

Pure pandas/numpy, hand-checked in tests/unit/test_evaluate.py.
"""
from __future__ import annotations

import numpy as np
import pandas as pd


def episodes_from_labels(frame: pd.DataFrame, label_col: str = "is_anomaly",
                         type_col: str | None = "anomaly_type") -> pd.DataFrame:
    """Runs of consecutive labelled readings per sensor -> sensor_id, anomaly_type, start, end."""
    rows = []
    for sid, g in frame.sort_values("timestamp").groupby("sensor_id", sort=True):
        lab = g[label_col].fillna(0).astype(bool).to_numpy()
        if not lab.any():
            continue
        ts = g["timestamp"].to_numpy()
        types = g[type_col].to_numpy() if type_col and type_col in g else np.full(len(g), "anomaly")
        edges = np.diff(np.concatenate([[0], lab.astype(np.int8), [0]]))
        for s, e in zip(np.nonzero(edges == 1)[0], np.nonzero(edges == -1)[0] - 1):
            rows.append({"sensor_id": sid, "anomaly_type": types[s] or "anomaly", "start": ts[s], "end": ts[e]})
    return pd.DataFrame(rows, columns=["sensor_id", "anomaly_type", "start", "end"])


def detected_episodes(flags: pd.DataFrame, merge_gap: pd.Timedelta) -> pd.DataFrame:
    """Flagged readings (sensor_id, timestamp) -> sensor_id, start, end, n_flags."""
    rows = []
    for sid, g in flags.sort_values("timestamp").groupby("sensor_id", sort=True):
        ts = pd.to_datetime(g["timestamp"], utc=True).astype("int64").to_numpy()
        new = np.concatenate([[True], np.diff(ts) > merge_gap.value])
        ids = np.cumsum(new)
        for i in np.unique(ids):
            sel = ts[ids == i]
            rows.append({"sensor_id": sid, "start": sel[0], "end": sel[-1], "n_flags": int(sel.size)})
    out = pd.DataFrame(rows, columns=["sensor_id", "start", "end", "n_flags"])
    for c in ("start", "end"):
        out[c] = pd.to_datetime(out[c], unit="ns", utc=True)
    return out


def episode_metrics(truth: pd.DataFrame, flags: pd.DataFrame, tolerance: pd.Timedelta,
                    merge_gap: pd.Timedelta, sensor_days: float | None = None) -> dict:
    """Episode recall (overall and per type), precision, detection delay, false alarms.

    Args:
        truth: sensor_id, anomaly_type, start, end (inclusive).
        flags: sensor_id, timestamp of every flagged reading.
        tolerance: how long after a labelled episode's end a detection still belongs to it.
        merge_gap: flags at most this far apart form one detected episode.
        sensor_days: observed sensor-days, to express false alarms per sensor-day.
    """
    truth = truth.copy()
    for c in ("start", "end"):
        truth[c] = pd.to_datetime(truth[c], utc=True)
    flags = flags.assign(timestamp=pd.to_datetime(flags["timestamp"], utc=True))
    # Compare as int64 nanoseconds since the epoch (UTC): no tz-aware/naive mix-ups.
    by_sensor = {sid: np.sort(g["timestamp"].astype("int64").to_numpy()) for sid, g in flags.groupby("sensor_id")}
    found, delays = [], []
    for ep in truth.itertuples(index=False):
        ts = by_sensor.get(ep.sensor_id, np.empty(0, dtype=np.int64))
        lo = np.searchsorted(ts, ep.start.value, side="left")
        hi = np.searchsorted(ts, ep.end.value, side="right")
        hit = hi > lo
        found.append(hit)
        delays.append((ts[lo] - ep.start.value) / 1e9 if hit else np.nan)
    truth["found"], truth["delay_s"] = found, delays

    det = detected_episodes(flags, merge_gap)
    true_det = np.zeros(len(det), dtype=bool)
    for i, d in enumerate(det.itertuples(index=False)):
        t = truth[truth["sensor_id"] == d.sensor_id]
        true_det[i] = bool(((d.start <= t["end"] + tolerance) & (d.end >= t["start"])).any())
    n_truth, n_det = len(truth), len(det)
    out = {
        "episodes": n_truth,
        "episodes_found": int(truth["found"].sum()),
        "episode_recall": float(truth["found"].mean()) if n_truth else float("nan"),
        "detected_episodes": n_det,
        "false_episodes": int((~true_det).sum()),
        "episode_precision": float(true_det.mean()) if n_det else float("nan"),
        "mean_delay_s": float(np.nanmean(delays)) if any(found) else float("nan"),
        "per_type": {},
    }
    if sensor_days:
        out["false_alarms_per_sensor_day"] = float((~true_det).sum() / sensor_days)
    for a_type, g in truth.groupby("anomaly_type"):
        out["per_type"][str(a_type)] = {"episodes": int(len(g)), "found": int(g["found"].sum()),
                                        "recall": float(g["found"].mean()),
                                        "mean_delay_s": float(g["delay_s"].mean()) if g["found"].any() else float("nan")}
    return out


def point_metrics(labels: np.ndarray, flags: np.ndarray) -> dict:
    """Point-wise precision, recall, F1, false-alarm and missed-alarm rates."""
    y = np.asarray(labels).astype(bool)
    p = np.asarray(flags).astype(bool)
    tp, fp = int((y & p).sum()), int((~y & p).sum())
    fn, tn = int((y & ~p).sum()), int((~y & ~p).sum())
    prec = tp / (tp + fp) if tp + fp else float("nan")
    rec = tp / (tp + fn) if tp + fn else float("nan")
    f1 = 2 * prec * rec / (prec + rec) if tp else 0.0
    return {"tp": tp, "fp": fp, "fn": fn, "tn": tn, "precision": prec, "recall": rec, "f1": f1,
            "false_alarm_rate": fp / (fp + tn) if fp + tn else float("nan"),
            "missed_alarm_rate": fn / (fn + tp) if fn + tp else float("nan")}


def format_table(metrics: dict) -> str:
    """Per-type recall table plus the episode summary, for terminals."""
    lines = [f"{'anomaly type':<14}{'injected':>9}{'found':>7}{'recall':>8}{'delay':>9}"]
    for t, m in sorted(metrics["per_type"].items()):
        delay = "" if np.isnan(m["mean_delay_s"]) else f"{m['mean_delay_s'] / 60:.0f} min"
        lines.append(f"{t:<14}{m['episodes']:>9}{m['found']:>7}{m['recall']:>8.2f}{delay:>9}")
    lines.append(f"{'all':<14}{metrics['episodes']:>9}{metrics['episodes_found']:>7}{metrics['episode_recall']:>8.2f}")
    lines.append(f"detected episodes: {metrics['detected_episodes']}, false: {metrics['false_episodes']}, "
                 f"episode precision: {metrics['episode_precision']:.2f}")
    return "\n".join(lines)
