"""``sentinel deploy`` (and ``spark-submit jobs/deploy.py``): the streaming detector."""
from __future__ import annotations

import json
import re
import sys

from sentinel.config import ConfigError, Settings

# A micro-batch that raised one of the package's one-sentence errors (a sink's StoreError, the
# alert topic's AlertPublishError) reaches the driver inside the text of Spark's
# StreamingQueryException, after the Python traceback: its last line names the class.
_BATCH_ERROR = re.compile(r"^sentinel\.[\w.]+\.(\w+Error): (.+)$", re.M)


def batch_failure(exc: BaseException) -> str | None:
    """The one-sentence error a failed micro-batch raised, found in ``exc``'s text (None: none)."""
    found = _BATCH_ERROR.findall(str(exc))
    return found[-1][1].strip() if found else None


def add_deploy_args(p):
    p.add_argument("--model", help="bundle directory or models/<name> (default: stream.model)")
    p.add_argument("--checkpoint", help="checkpoint folder (default: stream.checkpoint)")
    p.add_argument("--max-batches", type=int, help="stop after N micro-batches (default: stream.max_batches, 0 = never)")
    p.add_argument("--idle-timeout", type=float, help="stop after S seconds without input (default: stream.idle_timeout_s)")


def run_deploy(args, settings: Settings) -> int:
    from sentinel.stream import spark as sparkmod
    from sentinel.stream import query as stream_query
    from sentinel.detect.model import BundleInfo, pin_bundle, read_manifest
    from sentinel.store.sinks import build_sinks
    s = settings.replace(**{k: v for k, v in {
        "stream.model": args.model, "stream.checkpoint": args.checkpoint,
        "stream.max_batches": args.max_batches, "stream.idle_timeout_s": args.idle_timeout}.items() if v is not None})
    model_ref = s.stream.model
    start_ref = pin_bundle(model_ref)   # one version (a registry's promoted, else newest); fails with a sentence
    # The driver reads the manifest only: the model itself is loaded by the scoring workers, so
    # the driver's Python never imports TensorFlow.
    bundle = BundleInfo(start_ref, read_manifest(start_ref))
    if list(s.data.features) != bundle.features:
        raise ConfigError(f"model {start_ref} was trained on features {bundle.features} but data.features is "
                          f"{list(s.data.features)}: set data.features to match or deploy another model")
    stream_query.check_bundle(s, bundle.manifest)   # a zone bundle that cannot stream: its sentence, before Spark
    sinks = build_sinks(s)
    registry = None
    if s.sinks.sensors_file:
        from sentinel.store.registry import read_registry
        registry = read_registry(s.sinks.sensors_file)
        for sink in sinks:
            if hasattr(sink, "load_sensors"):
                sink.load_sensors(registry)
    spark = sparkmod.session(s, "deploy", kafka=s.source.type == "kafka")
    failure = None
    try:
        # The job follows the registry's pointer between micro-batches (hot swap) when
        # stream.model names a registry folder; executors load start_ref (an absolute path or URL).
        totals = stream_query.run(spark, s, bundle, sinks, bundle_ref=start_ref, model_ref=model_ref,
                                  registry=registry)
    except Exception as exc:  # StreamingQueryException (a failed batch), or run()'s RuntimeError
        # a store or the alert topic failed a micro-batch: its sentence, not Spark's traceback
        # (the batch is not committed: a restart re-runs it from the checkpoint)
        failure = batch_failure(exc)
        if failure is None:
            raise
    finally:
        for sink in sinks:
            sink.close()
        spark.stop()
    if failure is not None:
        print(f"error: {failure}", file=sys.stderr)
        return 1
    print(json.dumps({"totals": totals, "sinks": list(s.sinks.enabled), "sqlite": s.sinks.sqlite.path}))
    return 0
