"""``sentinel score`` and ``sentinel evaluate``: a file of readings through a bundle."""
from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

import pandas as pd

from sentinel.cli.common import add_column_args
from sentinel.config import ConfigError, Settings
from sentinel.detect.batch import score_table
from sentinel.ingest.history import read_table

log = logging.getLogger("sentinel")


def add_score_args(p):
    p.add_argument("--model", required=True, help="bundle directory, or models/<name> for its newest version")
    p.add_argument("--input", required=True, metavar="FILE", help="readings CSV/Parquet/JSON lines")
    p.add_argument("--out", metavar="SCORES.csv", help="write one row per input row here (default: stdout)")
    add_column_args(p)


def run_score(args, settings: Settings) -> int:
    from sentinel.detect.model import load_bundle
    bundle = load_bundle(args.model)
    frame = read_table(args.input)
    t0 = time.time()
    out = score_table(bundle, frame, settings)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        out.to_csv(args.out, index=False)
        log.info("scored %d rows (%d windows, %d anomalies) in %.1f s -> %s", len(out),
                 int(out["score"].notna().sum()), int(out["is_anomaly"].sum()), time.time() - t0, args.out)
    else:
        out.to_csv(sys.stdout, index=False)
    return 0


def add_evaluate_args(p):
    add_score_args(p)
    p.add_argument("--label-col", default="is_anomaly", help="0/1 label column")
    p.add_argument("--type-col", default="anomaly_type", help="anomaly type column (optional)")
    p.add_argument("--json", action="store_true", help="print metrics as JSON")


def run_evaluate(args, settings: Settings) -> int:
    from sentinel.detect import evaluate
    from sentinel.detect.model import load_bundle
    bundle = load_bundle(args.model)
    frame = read_table(args.input)
    if args.label_col not in frame:
        raise ConfigError(f"input has no label column '{args.label_col}': pass --label-col")
    scored = score_table(bundle, frame, settings)
    scored["label"] = frame[args.label_col].fillna(0).astype(int).to_numpy()
    scored["anomaly_type"] = frame[args.type_col].fillna("").to_numpy() if args.type_col in frame else ""
    interval = pd.Timedelta(seconds=int(bundle.manifest["window"]["interval_s"]))
    tol = interval * bundle.length
    scored["timestamp"] = pd.to_datetime(scored["timestamp"], utc=True)
    truth = evaluate.episodes_from_labels(scored, "label", "anomaly_type")
    flags = scored.loc[scored["is_anomaly"] == 1, ["sensor_id", "timestamp"]]
    days = (scored["timestamp"].max() - scored["timestamp"].min()) / pd.Timedelta(days=1)
    metrics = {"points": evaluate.point_metrics(scored["label"], scored["is_anomaly"]),
               "episodes": evaluate.episode_metrics(truth, flags, tol, tol, days * scored["sensor_id"].nunique()),
               "model": bundle.path}
    if args.json:
        print(json.dumps(metrics, indent=1, default=float))
    else:
        pm = metrics["points"]
        print(evaluate.format_table(metrics["episodes"]))
        print(f"point-wise: precision {pm['precision']:.3f} recall {pm['recall']:.3f} F1 {pm['f1']:.3f} "
              f"false-alarm rate {pm['false_alarm_rate']:.4f}")
    return 0
