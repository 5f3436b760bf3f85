"""Training job: history -> clean -> windows -> scaler + GRU/LSTM autoencoder -> threshold -> bundle.

Usage (from the project root, after `make setup`):

    SPARK_CONF_DIR=conf .venv/bin/spark-submit jobs/train.py --config conf/sentinel.toml \
        [--input data/history.csv] [--out models/pressure/v1] [--label-col is_anomaly]

Same code and flags as `sentinel train`; see `--help`.
"""
import sys

from sentinel.cli import main, train

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]], {"train": (train.add_train_args, train.run_train,
                                                         "training job")}, prog="jobs/train.py"))
