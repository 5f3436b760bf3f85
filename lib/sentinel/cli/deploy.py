"""``sentinel deploy`` (and ``spark-submit jobs/deploy.py``): the streaming detector."""
from __future__ import annotations

import json

from sentinel.config import ConfigError, Settings


def add_deploy_args(p):
    p.add_argument("--model", help="bundle directory or models/<name> (default: stream.model)")
    p.add_argument("--checkpoint", help="checkpoint folder (default: stream.checkpoint)")
    p.add_argument("--max-batches", type=int, help="stop after N micro-batches (default: stream.max_batches, 0 = never)")
    p.add_argument("--idle-timeout", type=float, help="stop after S seconds without input (default: stream.idle_timeout_s)")


def run_deploy(args, settings: Settings) -> int:
    from sentinel.stream import spark as sparkmod
    from sentinel.stream import query as stream_query
    from sentinel.detect.model import load_bundle, resolve_bundle
    from sentinel.store.sinks import build_sinks
    s = settings.replace(**{k: v for k, v in {
        "stream.model": args.model, "stream.checkpoint": args.checkpoint,
        "stream.max_batches": args.max_batches, "stream.idle_timeout_s": args.idle_timeout}.items() if v is not None})
    model_ref = s.stream.model
    from sentinel.store.storage import is_s3_url, newest_bundle_url
    if is_s3_url(model_ref):  # pin one version so every worker loads the same bundle
        model_ref = newest_bundle_url(model_ref)
    bundle_dir = resolve_bundle(model_ref)  # fails fast with a clear sentence
    bundle = load_bundle(str(bundle_dir.resolve()))
    if list(s.data.features) != bundle.features:
        raise ConfigError(f"model {bundle_dir} was trained on features {bundle.features} but data.features is "
                          f"{list(s.data.features)}: set data.features to match or deploy another model")
    if s.threshold.persistence_n > 1:
        # The UDF sees one micro-batch, not a sensor's earlier flags; carrying them would need
        # a second stateful step after scoring, which is not built (measured: it lost spikes
        # and removed almost no false alarms, see docs/detection.md).
        raise ConfigError("threshold.persistence_n > 1 is applied by `sentinel score`/`evaluate` only; the "
                          "deploy job does not carry flags between micro-batches yet: set persistence_n = 1")
    sinks = build_sinks(s)
    if s.sinks.sensors_file:
        from sentinel.store.registry import read_registry
        registry = read_registry(s.sinks.sensors_file)
        for sink in sinks:
            if hasattr(sink, "load_sensors"):
                sink.load_sensors(registry)
    spark = sparkmod.session(s, "deploy", kafka=s.source.type == "kafka")
    try:
        totals = stream_query.run(spark, s, bundle, sinks, bundle_ref=model_ref if is_s3_url(model_ref) else None)
    finally:
        for sink in sinks:
            sink.close()
        spark.stop()
    print(json.dumps({"totals": totals, "sinks": list(s.sinks.enabled), "sqlite": s.sinks.sqlite.path}))
    return 0
