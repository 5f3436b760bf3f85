"""Retraining job: recent history (the store's scores, or a history file) -> labelled periods left
out -> challenger -> champion vs challenger on the newest held-out days -> registry, promoted
per policy (a running deploy job switches to a promoted version between micro-batches).

Usage (from the project root, after `make setup`):

    SPARK_CONF_DIR=conf .venv/bin/spark-submit jobs/retrain.py --config conf/sentinel.toml \
        [--store sqlite:///data/sentinel.db | --history data/history.csv] [--since 28d] \
        [--promote auto|manual] [--registry models/pressure]

Same code and flags as `sentinel retrain`; see `--help`. Scheduled by dags/sentinel_retrain.py
(Airflow) or the cron line in docs/lifecycle.md.
"""
import sys

from sentinel.cli import main, retrain

if __name__ == "__main__":
    sys.exit(main(["retrain", *sys.argv[1:]], {"retrain": (retrain.add_retrain_args, retrain.run_retrain,
                                                             "retraining job")}, prog="jobs/retrain.py"))
