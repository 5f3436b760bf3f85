"""Shared flags and set-up of every command: --config, --set, -v, the column flags."""
from __future__ import annotations

import argparse
import json
import logging
import sys

from sentinel.config import Settings, load_settings


class EnvDefaultHelp(argparse.RawDescriptionHelpFormatter):
    """Keeps description layout; each option states its default in its own help text."""


def add_common_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", default=None,
                   help="TOML settings file (documented defaults: conf/sentinel.toml); if not given, "
                        "built-in defaults are used")
    p.add_argument("--set", metavar="SECTION.KEY=VALUE", action="append", default=[], dest="overrides",
                   help="override one setting, e.g. --set window.length=64 (repeatable; value parsed as TOML)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def settings_from(args, extra: dict | None = None) -> Settings:
    overrides = list(args.overrides)
    for key, value in (extra or {}).items():
        if value is not None:
            overrides.append(f"{key}={json.dumps(value)}")
    return load_settings(args.config, overrides)


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S",
                        stream=sys.stderr, force=True)
    for noisy in ("py4j", "matplotlib", "urllib3", "botocore", "absl"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def column_overrides(args) -> dict:
    feats = getattr(args, "features", None)
    return {"data.features": [f.strip() for f in feats.split(",") if f.strip()] if feats else None,
            "data.time_field": getattr(args, "time_col", None),
            "data.sensor_field": getattr(args, "sensor_col", None)}


def add_column_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--features", metavar="A,B,C", help="numeric columns to model (default: data.features)")
    p.add_argument("--time-col", help="timestamp column (default: data.time_field)")
    p.add_argument("--sensor-col", help="sensor id column; absent column = one sensor (default: data.sensor_field)")
