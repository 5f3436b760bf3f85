"""Detection quality on the standard synthetic benchmark, models side by side with a baseline.

    make bench-quality            # or: .venv/bin/python benchmarks/quality.py [--json out.json]

The benchmark (fixed seed): 20 sensors, 14 days of labelled training history and a 7-day test
period that continues the same network, 5-minute readings, every anomaly type injected. In one
run it trains and evaluates the default model (GRU), an LSTM variant, and a rolling z-score
detector as the baseline, scoring with `sentinel.commands.score_table` (the streaming UDF's
windowing and scoring code). Prints a table and writes JSON.

`--quick` shrinks everything for a smoke run (what `make test` checks).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))

from sentinel import evaluate  # noqa: E402
from sentinel.commands import score_table  # noqa: E402
from sentinel.config import load_settings  # noqa: E402
from sentinel.model import load_bundle  # noqa: E402
from sentinel.synthetic import simulate  # noqa: E402
from sentinel.training import fit_bundle  # noqa: E402

SEED = 7


def metrics_for(frame: pd.DataFrame, flags: np.ndarray, tolerance: pd.Timedelta, days: float) -> dict:
    f = frame.assign(flag=flags.astype(bool))
    truth = evaluate.episodes_from_labels(f, "is_anomaly", "anomaly_type")
    ep = evaluate.episode_metrics(truth, f.loc[f.flag, ["sensor_id", "timestamp"]], tolerance, tolerance,
                                  days * f.sensor_id.nunique())
    pts = evaluate.point_metrics(f.is_anomaly, f.flag)
    return {"points": pts, "episodes": ep}


def rolling_zscore(frame: pd.DataFrame, window: int, z: float) -> np.ndarray:
    """Baseline: |x - rolling mean| / rolling std of the previous `window` readings > z."""
    flags = np.zeros(len(frame), dtype=bool)
    for _, g in frame.groupby("sensor_id"):
        x = g["pressure"]
        mu = x.shift(1).rolling(window, min_periods=window).mean()
        sd = x.shift(1).rolling(window, min_periods=window).std()
        flags[g.index.to_numpy()] = ((x - mu).abs() / sd.clip(lower=1e-6) > z).fillna(False).to_numpy()
    return flags


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", default="reports/quality.json", help="where to write the metrics")
    ap.add_argument("--quick", action="store_true", help="tiny sizes, for a smoke test")
    ap.add_argument("--variants", default="gru,lstm", help="model variants to train (default first)")
    args = ap.parse_args(argv)
    sensors, train_days, test_days = (4, 5, 2) if args.quick else (20, 14, 7)
    base = ["model.epochs=2", "window.length=16", "model.units=8"] if args.quick else []
    train = simulate(sensors, train_days, 300, SEED, "2026-01-05T00:00:00Z", 2.0)
    test = simulate(sensors, test_days, 300, SEED, (pd.Timestamp("2026-01-05T00:00:00Z") + pd.Timedelta(days=train_days)).isoformat(), 3.0)
    frame = train.readings.rename(columns={"timestamp": "event_time"})
    tr = test.readings.reset_index(drop=True)
    print(f"benchmark: {sensors} sensors, {train_days} d training, {test_days} d test, "
          f"{len(test.episodes)} test episodes ({', '.join(f'{k} {v}' for k, v in test.episodes.anomaly_type.value_counts().sort_index().items())})",
          flush=True)
    results, rows = {}, []
    work = Path(tempfile.mkdtemp(prefix="sentinel-quality-"))
    for variant in args.variants.split(","):
        settings = load_settings(None, base + [f"model.cell={variant}", "train.report=false"])
        t0 = time.time()
        path, report = fit_bundle(frame, settings, work / variant, label_col="is_anomaly")
        train_s = time.time() - t0
        bundle = load_bundle(str(path))
        scored = score_table(bundle, tr, settings)
        tol = pd.Timedelta(seconds=settings.window.interval_s * bundle.length)
        m = metrics_for(tr, scored["is_anomaly"].to_numpy(), tol, test_days)
        m["train_seconds"] = round(train_s, 1)
        m["threshold"] = bundle.threshold.value
        name = f"{variant.upper()} autoencoder" + (" (default)" if variant == args.variants.split(",")[0] else "")
        results[name] = m
    settings = load_settings(None, base)
    tol = pd.Timedelta(seconds=settings.window.interval_s * settings.window.length)
    results[f"rolling z-score baseline (W={settings.window.length}, |z|>4)"] = metrics_for(
        tr, rolling_zscore(tr, settings.window.length, 4.0), tol, test_days)

    types = sorted(test.episodes.anomaly_type.unique())
    head = f"{'detector':<40}{'pt-P':>6}{'pt-R':>6}{'pt-F1':>7}{'ep-R':>6}{'ep-P':>6}{'FA/s-wk':>8}" + "".join(f"{t[:6]:>7}" for t in types)
    print(head)
    for name, m in results.items():
        p, e = m["points"], m["episodes"]
        fa_week = e.get("false_alarms_per_sensor_day", float("nan")) * 7
        line = (f"{name:<40}{p['precision']:>6.2f}{p['recall']:>6.2f}{p['f1']:>7.2f}{e['episode_recall']:>6.2f}"
                f"{e['episode_precision']:>6.2f}{fa_week:>8.2f}")
        line += "".join(f"{e['per_type'].get(t, {}).get('recall', float('nan')):>7.2f}" for t in types)
        print(line)
    print("pt = point-wise, ep = episode-wise, FA/s-wk = false alarm episodes per sensor-week; "
          "per-type columns = episode recall")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(results, indent=1, default=float))
    print(f"metrics written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
