"""The streaming path (Spark, transformWithStateInPandas + pandas UDF) against the batch path.

Events are written as JSON-lines files, one micro-batch per file, shuffled inside each file:
the windows and scores assembled across micro-batches must equal `sentinel score`'s for the
same readings; malformed and late lines must come out as rejects.
"""
import os

import numpy as np
import pandas as pd
import pytest

from sentinel.stream import query as stream_query, writer as stream_writer
from sentinel.detect.batch import score_table
from sentinel.ingest.events import to_event_json
from sentinel.detect.model import load_bundle

pytestmark = pytest.mark.spark


@pytest.fixture(scope="module")
def streamed(spark, tiny_settings, tiny_bundle, tiny_network, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("stream")
    src = tmp / "in"
    src.mkdir()
    r = tiny_network.readings
    r = r[r.timestamp >= r.timestamp.max() - pd.Timedelta(days=1)].reset_index(drop=True)
    lines = [to_event_json(x.sensor_id, x.timestamp, {"pressure": x.pressure}, tiny_settings.data)
             for x in r.itertuples()]
    rng = np.random.default_rng(0)
    chunks = np.array_split(np.arange(len(lines)), 6)
    for i, idx in enumerate(chunks):
        body = [lines[j] for j in rng.permutation(idx)]
        if i == 2:
            body += ["garbage", '{"sensor_id": "PT-0001", "timestamp": "2026-01-01T00:00:00Z", "pressure": "x"}']
        (src / f"part-{i:03d}.jsonl").write_text("\n".join(body) + "\n")
    late_line = lines[chunks[0][5]]  # a reading long since scored
    (src / "part-999.jsonl").write_text(late_line.replace('"pressure": ', '"pressure": 1') + "\n")
    # The file source takes files in modification-time order: make that the name order.
    for k, f in enumerate(sorted(src.iterdir())):
        os.utime(f, (1_700_000_000 + 10 * k, 1_700_000_000 + 10 * k))

    settings = tiny_settings.replace(**{"stream.checkpoint": str(tmp / "ckpt")})
    bundle = load_bundle(str(tiny_bundle))
    raw = (spark.readStream.format("text").option("maxFilesPerTrigger", 1).load(str(src))
           .selectExpr("value AS raw", "CAST(NULL AS STRING) AS key"))
    df = stream_query.build_stream(spark, settings, bundle.path, bundle.manifest, raw, keep_scores=True)
    batches = []

    def collect(batch, batch_id):
        batches.append(stream_writer.collect_batch(batch, len(bundle.features), keep_scores=True))

    q = (df.writeStream.foreachBatch(collect).option("checkpointLocation", settings.stream.checkpoint)
         .trigger(availableNow=True).start())
    try:
        q.awaitTermination(300)
    finally:
        q.stop()
    assert q.exception() is None
    return r, batches, bundle, settings


def test_every_line_comes_out_once_over_several_micro_batches(streamed):
    readings, batches, bundle, _ = streamed
    assert len(batches) >= 6
    assert sum(b.events for b in batches) == len(readings) + 3  # readings + 2 malformed + 1 late
    scored = sum(b.scored for b in batches)
    assert scored == sum(len(b.scores) for b in batches)
    assert scored + sum(b.warmup for b in batches) + sum(len(b.rejects) for b in batches) == len(readings) + 3
    # anomalies are exactly the flagged scores
    flagged = sum(int(b.scores["is_anomaly"].sum()) for b in batches)
    assert flagged == sum(len(b.anomalies) for b in batches)


def test_streamed_scores_equal_the_batch_path(streamed):
    readings, batches, bundle, settings = streamed
    batch = score_table(bundle, readings.rename(columns={}), settings)
    batch["event_time"] = pd.to_datetime(batch["timestamp"], utc=True)
    s = pd.concat([b.scores for b in batches], ignore_index=True)
    merged = s.merge(batch[batch.score.notna()], on=["sensor_id", "event_time"], suffixes=("_stream", "_batch"),
                     how="outer", indicator=True)
    assert (merged["_merge"] == "both").all(), merged["_merge"].value_counts()
    np.testing.assert_allclose(merged["score_stream"], merged["score_batch"], rtol=1e-4, atol=1e-7)
    assert (merged["is_anomaly_stream"].astype(bool) == merged["is_anomaly_batch"].astype(bool)).all()
    # warm-up: the first W-1 readings of each sensor have no window in either path
    assert sum(b.warmup for b in batches) == batch["score"].isna().sum() == 4 * (bundle.length - 1)
    # the stream carries each reading's own values with its score
    got = s.sort_values(["sensor_id", "event_time"])
    want = readings.assign(event_time=pd.to_datetime(readings["timestamp"], utc=True)).merge(
        got[["sensor_id", "event_time"]], on=["sensor_id", "event_time"]).sort_values(["sensor_id", "event_time"])
    np.testing.assert_allclose(np.stack(got["values"]).ravel(), want["pressure"].to_numpy(), atol=1e-4)  # JSON: 4 decimals


def test_malformed_and_late_lines_become_rejects(streamed):
    _, batches, *_ = streamed
    rej = pd.concat([b.rejects for b in batches if len(b.rejects)], ignore_index=True)
    reasons = sorted(r.split(":")[0] for r in rej.reject_reason)
    assert reasons == ["late", "non_numeric", "not_json"]
    assert rej[rej.status == "late"].sensor_id.notna().all()
