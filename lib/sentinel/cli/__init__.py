"""``sentinel`` command line: one short module per sub-command, each an ``add_*_args(parser)``
plus a ``run_*(args, settings)`` that calls one library function. Glue only: nothing in the
package imports ``sentinel.cli``; ``jobs/*.py`` call :func:`main`."""
from __future__ import annotations

import argparse
import sys

from sentinel.cli import (common, compare, deploy, incidents, models, produce, query, retrain, score, serve, simulate,
                          train)
from sentinel.config import ConfigError

COMMANDS = {
    "query": (query.add_query_args, query.run_query,
              "print anomalies from a store (sqlite:///, postgresql://, s3://) with filters, as table/csv/json"),
    "report": (query.add_report_args, query.run_report,
               "draw per-sensor anomaly plots and a summary page (summary.md + summary.png) from a store"),
    "incidents": (incidents.add_incidents_args, incidents.run_incidents,
                  "list, show, acknowledge, close and label incidents; set and list maintenance windows (mutes)"),
    "simulate": (simulate.add_simulate_args, simulate.run_simulate,
                 "write labelled synthetic pressure history, or stream a live feed to a socket or Kafka"),
    "train": (train.add_train_args, train.run_train,
              "fit scaler + GRU/LSTM autoencoder + threshold on history; write a model bundle"),
    "score": (score.add_score_args, score.run_score, "score a file of readings with a bundle (one row per reading)"),
    "evaluate": (score.add_evaluate_args, score.run_evaluate, "precision/recall of a bundle on labelled readings"),
    "deploy": (deploy.add_deploy_args, deploy.run_deploy,
               "run the streaming detector (socket or Kafka in, anomalies to the configured stores)"),
    "compare": (compare.add_compare_args, compare.run_compare,
                "compare the anomalies in a SQLite store with the ground truth of a simulated feed"),
    "produce": (produce.add_produce_args, produce.run_produce,
                "send a file of JSON events (one per line) to a Kafka topic, keyed by sensor id"),
    "retrain": (retrain.add_retrain_args, retrain.run_retrain,
                "train a challenger on recent history (labels and mutes applied), compare it with the served "
                "model, add it to the registry, promote it per policy"),
    "models": (models.add_models_args, models.run_models,
               "the model registry: list | show VERSION | promote VERSION | rollback | drift"),
    "serve": (serve.add_serve_args, serve.run_serve, "the operator web app: HTTP API and live page over a store"),
}


def build_parser(commands: dict = COMMANDS, prog: str = "sentinel") -> argparse.ArgumentParser:
    shared = argparse.ArgumentParser(add_help=False)
    common.add_common_args(shared)
    parser = argparse.ArgumentParser(prog=prog, description="Pressure Sentinel: streaming anomaly "
                                     "detection for pressure sensors. Run `sentinel COMMAND --help`.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (add_args, _, help_text) in commands.items():
        p = sub.add_parser(name, parents=[shared], help=help_text, description=help_text,
                           formatter_class=common.EnvDefaultHelp)
        add_args(p)
    return parser


def main(argv: list[str] | None = None, commands: dict = COMMANDS, prog: str = "sentinel") -> int:
    args = build_parser(commands, prog).parse_args(argv)
    common.setup_logging(args.verbose)
    _, run, _ = commands[args.command]
    try:
        settings = common.settings_from(args, common.column_overrides(args))
        return run(args, settings) or 0
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # one sentence for known user errors, a traceback otherwise
        from sentinel.detect.model import BundleError
        from sentinel.detect.training import TrainingDataError
        from sentinel.ingest.feed import FeedError
        from sentinel.ingest.history import HistoryError
        from sentinel.ingest.network import NetworkSimError
        from sentinel.lifecycle.registry import LifecycleError
        from sentinel.store.errors import StoreError
        if isinstance(exc, (HistoryError, BundleError, TrainingDataError, FeedError, LifecycleError, StoreError,
                            NetworkSimError)):
            print(f"error: {exc}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
