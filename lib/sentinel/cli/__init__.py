"""``sentinel`` command line: one short function per sub-command, all in ``commands``."""
from __future__ import annotations

import argparse
import sys

from sentinel import commands as c
from sentinel import kafka as _kafka
from sentinel import analysis as _analysis

COMMANDS = {
    "query": (_analysis.add_query_args, _analysis.run_query,
              "print anomalies from a store (sqlite:///, postgresql://, s3://) with filters, as table/csv/json"),
    "report": (_analysis.add_report_args, _analysis.run_report,
               "draw per-sensor anomaly plots and a summary page (summary.md + summary.png) from a store"),
    "simulate": (c.add_simulate_args, c.run_simulate,
                 "write labelled synthetic pressure history, or stream a live feed to a socket or Kafka"),
    "train": (c.add_train_args, c.run_train,
              "fit scaler + GRU/LSTM autoencoder + threshold on history; write a model bundle"),
    "score": (c.add_score_args, c.run_score, "score a file of readings with a bundle (one row per reading)"),
    "evaluate": (c.add_evaluate_args, c.run_evaluate, "precision/recall of a bundle on labelled readings"),
    "deploy": (c.add_deploy_args, c.run_deploy,
               "run the streaming detector (socket or Kafka in, anomalies to the configured stores)"),
    "compare": (c.add_compare_args, c.run_compare,
                "compare the anomalies in a SQLite store with the ground truth of a simulated feed"),
    "produce": (_kafka.add_produce_args, _kafka.run_produce,
                "send a file of JSON events (one per line) to a Kafka topic, keyed by sensor id"),
}


def build_parser(commands: dict = COMMANDS, prog: str = "sentinel") -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    c.add_common_args(common)
    parser = argparse.ArgumentParser(prog=prog, description="Pressure Sentinel: streaming anomaly "
                                     "detection for pressure sensors. Run `sentinel COMMAND --help`.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (add_args, _, help_text) in commands.items():
        p = sub.add_parser(name, parents=[common], help=help_text, description=help_text,
                           formatter_class=c.EnvDefaultHelp)
        add_args(p)
    return parser


def main(argv: list[str] | None = None, commands: dict = COMMANDS, prog: str = "sentinel") -> int:
    args = build_parser(commands, prog).parse_args(argv)
    c.setup_logging(args.verbose)
    _, run, _ = commands[args.command]
    try:
        settings = c.settings_from(args, c._column_overrides(args))
        return run(args, settings) or 0
    except c.ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # one sentence for known user errors, a traceback otherwise
        from sentinel.history import HistoryError
        from sentinel.model import BundleError
        from sentinel.training import TrainingDataError
        from sentinel.feed import FeedError
        if isinstance(exc, (HistoryError, BundleError, TrainingDataError, FeedError)):
            print(f"error: {exc}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
