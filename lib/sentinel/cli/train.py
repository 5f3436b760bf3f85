"""``sentinel train`` (and ``spark-submit jobs/train.py``): history -> model bundle."""
from __future__ import annotations

import logging
from pathlib import Path

from sentinel.cli.common import add_column_args
from sentinel.config import Settings

log = logging.getLogger("sentinel")


def add_train_args(p):
    p.add_argument("--input", metavar="FILE", help="history CSV/Parquet/JSON lines (default: train.input)")
    p.add_argument("--out", metavar="MODEL_DIR", help="bundle directory (default: model.dir/model.name/<version>)")
    p.add_argument("--label-col", help="0/1 anomaly label column; labelled windows are left out of training")
    p.add_argument("--format", choices=["auto", "csv", "parquet", "json"], help="input format (default: by extension)")
    add_column_args(p)


def run_train(args, settings: Settings) -> int:
    from sentinel.stream import history, spark as sparkmod
    from sentinel.detect.training import fit_bundle
    s = settings
    path = args.input or s.train.input
    spark = sparkmod.session(s, "train")
    try:
        frame, cleaning = history.load_clean(spark, s, path, args.format or s.train.format, args.label_col)
    finally:
        spark.stop()
    target = args.out or s.train.out or None
    from sentinel.store.storage import is_s3_url, upload_dir
    if target and is_s3_url(target):  # train into a local folder, then upload the bundle
        import tempfile
        local = Path(tempfile.mkdtemp(prefix="sentinel-bundle-"))
        out, report = fit_bundle(frame, s, local, args.label_col, cleaning)
        upload_dir(out, target)
        log.info("bundle uploaded to %s", target)
    else:
        out, report = fit_bundle(frame, s, target, args.label_col, cleaning)
    v = report["validation"]
    print(f"model bundle: {out}\nthreshold: {report['threshold']['value']:.5g} ({report['threshold']['method']})\n"
          f"validation windows: {v['windows']}, false alarm rate on them: {v['false_alarm_rate']:.4f}\n"
          f"report: {out / 'training_report.png'}  ({report['seconds']} s)")
    return 0
