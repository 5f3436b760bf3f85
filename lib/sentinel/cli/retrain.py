"""``sentinel retrain`` (and ``spark-submit jobs/retrain.py``): recent history -> challenger ->
comparison with the champion -> registry, promoted per policy."""
from __future__ import annotations

import contextlib
import getpass
import json
import re
import sys

import pandas as pd

from sentinel.cli.models import add_registry_arg
from sentinel.config import ConfigError, Settings

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(h|d|w)\s*$", re.I)


def add_retrain_args(p):
    p.add_argument("--store", metavar="URL",
                   help="read the deploy job's scores, incidents and mutes from this store (sqlite:///, "
                        "postgresql://, s3://; default: lifecycle.store, else the first of sinks.enabled)")
    p.add_argument("--history", metavar="PATH",
                   help="read readings from this CSV/Parquet/JSON-lines file or folder (local or s3://) instead; "
                        "with --store too, incident labels and mutes still come from the store")
    p.add_argument("--since", metavar="T",
                   help="window start: a duration back from its end (28d, 2w, 36h) or ISO-8601 "
                        "(default: lifecycle.window_days)")
    p.add_argument("--until", metavar="T", help="window end, ISO-8601 (default: now for a store, the newest "
                                                "reading for a history file)")
    p.add_argument("--promote", metavar="POLICY", help="auto | manual (default: lifecycle.promote)")
    p.add_argument("--by", metavar="NAME", help="who promotes, for the history (default: the user name)")
    p.add_argument("--json", action="store_true", help="print the comparison as JSON")
    add_registry_arg(p)


def parse_window(since: str | None, until: str | None, settings: Settings) -> tuple[float, pd.Timestamp | None, pd.Timestamp | None]:
    """--since/--until -> (window_days, since or None, until or None)."""
    from sentinel.store.query import parse_time
    days = settings.lifecycle.window_days
    start = end = None
    if until:
        end = parse_time(until)
    if since:
        m = _DURATION.match(since)
        if m:
            days = float(m.group(1)) * {"h": 1 / 24, "d": 1.0, "w": 7.0}[m.group(2).lower()]
        else:
            start = parse_time(since)
    return days, start, end


def run_retrain(args, settings: Settings) -> int:
    from sentinel.lifecycle import sources
    from sentinel.lifecycle.compare import check_policy
    from sentinel.lifecycle.registry import Registry, registry_url
    from sentinel.lifecycle.retrain import retrain
    from sentinel.store.query import default_store
    policy = check_policy(args.promote or settings.lifecycle.promote)
    days, start, end = parse_window(args.since, args.until, settings)
    s = settings.replace(**{"lifecycle.window_days": days}) if days != settings.lifecycle.window_days else settings
    if s.lifecycle.holdout_days >= days:
        raise ConfigError(f"--since {args.since} leaves no days to train on before the {s.lifecycle.holdout_days} "
                          f"held-out days: widen it or lower lifecycle.holdout_days")
    reg = Registry(args.registry or registry_url(s))
    if args.history:
        data = sources.read_history(args.history, s)
        if args.store:
            labels = sources.read_store(args.store, s, None, None, scores=False)
            data.incidents, data.mutes, data.zones = labels.incidents, labels.mutes, labels.zones
            data.source += f" (labels from {args.store})"
    else:
        url = args.store or s.lifecycle.store or default_store(s)  # a URL or the configured Store
        until = end or pd.Timestamp.now(tz="UTC")
        data = sources.read_store(url, s, start or until - pd.Timedelta(days=days), until)
    # Keras reports epochs on stdout: keep stdout for the result (JSON must parse)
    with contextlib.redirect_stdout(sys.stderr):
        res = retrain(data, s, reg, policy, start, end, by=args.by or getpass.getuser())
    if args.json:
        print(json.dumps({"version": res.version, "ref": res.ref, "champion": res.champion, "promoted": res.promoted,
                          "comparison": res.comparison, "lineage": res.lineage}, indent=1, default=str))
        return 0
    print(f"challenger {res.version} -> {res.ref}")
    for who in ("champion", "challenger"):
        f = res.comparison.get(who)
        if f:
            rec = "n/a (no labelled incidents)" if f["recall"] is None else f"{f['recall']:.3f} ({f['incidents_found']}/{f['incidents']})"
            print(f"  {who:<10} {f['version']}: {f['false_alarms_per_sensor_day']:.3f} false alarms per sensor-day "
                  f"({f['false_alarms']} on {f['normal_sensor_days']} normal sensor-days), recall {rec}")
    print(f"verdict: {res.decision.verdict} ({'; '.join(res.decision.reasons)})")
    print(f"promoted: {res.version} is now served" if res.promoted
          else f"not promoted: {reg.serving() or 'nothing'} stays served")
    for m in res.messages:
        print(m)
    return 0
