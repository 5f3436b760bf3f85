"""A zone (network) bundle streamed through the deploy job, against the batch path.

A residual zone bundle (ridge: no TensorFlow) is trained on the tiny network with a registry of
two zones; its last day is written as JSON-lines files, one micro-batch each, shuffled inside
each file, and streamed by ``stream.query.run`` into SQLite in two runs on one checkpoint (a
restart in between, with readings waiting in the state). On the way: one sensor's readings of
the last two time steps of a file arrive with the next file (within ``window.wait_slots``),
one reading arrives long after its time step was emitted, a sensor outside the zones reports,
one line is sent twice, and one sensor's very last reading never comes (its zone's last step
stays pending). Scores, flags and explanations must equal ``batch.score_table``'s for the
readings the stream accepted, and every line must be accounted for once.
"""
import json
import os
import sqlite3

import numpy as np
import pandas as pd
import pytest

from sentinel.config import load_settings
from sentinel.detect.batch import score_table
from sentinel.detect.model import BundleInfo, load_bundle, read_manifest
from sentinel.detect.training import fit_bundle
from sentinel.ingest.events import to_event_json
from sentinel.store.sinks import build_sinks
from sentinel.stream import query as stream_query

pytestmark = pytest.mark.spark

ZONES = {"PT-0001": "A", "PT-0002": "A", "PT-0003": "B", "PT-0004": "B"}
FILES = 5


@pytest.fixture(scope="module")
def streamed(spark, tiny_network, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("zones")
    registry = tiny_network.sensors.assign(zone=tiny_network.sensors["sensor_id"].map(ZONES))
    r = tiny_network.readings
    cut = r.timestamp.max() - pd.Timedelta(days=1)
    settings = load_settings(None, [
        'model.kind="residual"', 'residual.zones="registry"', "window.interval_s=0", "window.max_gap_s=0",
        "train.report=false", f'stream.checkpoint="{tmp / "ckpt"}"', f'sinks.sqlite.path="{tmp / "store.db"}"',
        "stream.trigger_s=0.5", "stream.idle_timeout_s=4.0", "stream.state_buckets=4"])
    out, _ = fit_bundle(r[r.timestamp < cut].rename(columns={"timestamp": "event_time"}), settings,
                        tmp / "bundle", label_col="is_anomaly", registry=registry)
    info = BundleInfo(str(out), read_manifest(str(out)))
    assert info.manifest["model"]["zones"] == {"A": ["PT-0001", "PT-0002"], "B": ["PT-0003", "PT-0004"]}
    assert info.manifest["window"]["wait_slots"] == 2

    day = r[r.timestamp >= cut].sort_values(["timestamp", "sensor_id"]).reset_index(drop=True)
    steps = pd.DatetimeIndex(sorted(day.timestamp.unique()))
    slots = [steps[idx] for idx in np.array_split(np.arange(len(steps)), FILES)]
    # a sustained offset of one member against its zone neighbour: anomalies (and an incident) for sure
    burst = (day.sensor_id == "PT-0002") & day.timestamp.isin(slots[2][20:26])
    day.loc[burst, "pressure"] += 6.0
    day["pressure"] = day["pressure"].round(4)   # what the JSON lines carry (to_event_json)
    file_of = np.zeros(len(day), dtype=int)
    for k, ts in enumerate(slots):
        file_of[day.timestamp.isin(ts).to_numpy()] = k
    sid, ts = day.sensor_id.to_numpy(), day.timestamp
    # PT-0003's last two steps of file 1 come with file 2: its zone waits for them (wait_slots = 2)
    waited = np.flatnonzero((sid == "PT-0003") & ts.isin(slots[1][-2:]).to_numpy())
    file_of[waited] = 2
    # PT-0001's reading at the 10th step of file 0 comes with the last file: long after its step
    too_late = int(np.flatnonzero((sid == "PT-0001") & (ts == slots[0][10]).to_numpy())[0])
    file_of[too_late] = FILES - 1
    # PT-0004's very last reading never comes: zone B's last step stays pending in the state
    never = int(np.flatnonzero((sid == "PT-0004") & (ts == slots[-1][-1]).to_numpy())[0])
    lines = [to_event_json(x.sensor_id, x.timestamp, {"pressure": x.pressure}, settings.data)
             for x in day.itertuples()]
    src = tmp / "in"
    src.mkdir()
    rng = np.random.default_rng(1)
    extra = {3: [to_event_json("PT-0099", t, {"pressure": 30.0}, settings.data) for t in slots[3][:3]]
             + [lines[int(np.flatnonzero((sid == "PT-0002") & (ts == slots[3][5]).to_numpy())[0])]]}
    sent = 0
    for k in range(FILES):
        body = [lines[i] for i in np.flatnonzero(file_of == k) if i != never] + extra.get(k, [])
        body = [body[i] for i in rng.permutation(len(body))]
        sent += len(body)
        (src / f"part-{k:03d}.jsonl").write_text("\n".join(body) + "\n")
        os.utime(src / f"part-{k:03d}.jsonl", (1_700_000_000 + 10 * k, 1_700_000_000 + 10 * k))

    def run(max_batches: int):
        s = settings.replace(**{"stream.max_batches": max_batches})
        raw = (spark.readStream.format("text").option("maxFilesPerTrigger", 1).load(str(src))
               .selectExpr("value AS raw", "CAST(NULL AS STRING) AS key"))
        sinks = build_sinks(s)
        try:
            return stream_query.run(spark, s, info, sinks, source_df=raw, registry=registry)
        finally:
            for sink in sinks:
                sink.close()

    run(2)   # stops with PT-0003's two readings waiting in the checkpointed state
    run(0)   # a restart on the same checkpoint reads the rest
    with sqlite3.connect(tmp / "store.db") as con:
        tables = {t: pd.read_sql_query(f"SELECT * FROM {t}", con)
                  for t in ("scores", "anomalies", "rejects", "batches", "incidents")}
    accepted = day.drop(index=[too_late, never]).reset_index(drop=True)
    batch = score_table(load_bundle(str(out)), accepted, settings, details=True)
    batch["event_time"] = pd.to_datetime(batch["timestamp"], utc=True)
    return {"tables": tables, "batch": batch, "sent": sent, "day": day, "too_late": day.iloc[too_late],
            "never": day.iloc[never], "registry": registry}


def _times(frame):
    return frame.assign(event_time=pd.to_datetime(frame["event_time"], utc=True, format="mixed"))


def test_streamed_scores_and_flags_equal_the_batch_path(streamed):
    scores, batch = _times(streamed["tables"]["scores"]), streamed["batch"]
    assert not scores.duplicated(["sensor_id", "event_time"]).any()
    merged = scores.merge(batch[batch.score.notna()], on=["sensor_id", "event_time"], how="outer",
                          suffixes=("_stream", "_batch"), indicator=True)
    # the only difference: zone B's last step, still pending in the stream (PT-0004 never sent it)
    extra = merged[merged._merge != "both"]
    last = streamed["never"].timestamp
    assert extra[["sensor_id", "event_time", "_merge"]].values.tolist() == [["PT-0003", last, "right_only"]]
    both = merged[merged._merge == "both"]
    assert len(both) > 1000 and set(both.sensor_id) == set(ZONES)
    np.testing.assert_allclose(both.score_stream, both.score_batch, rtol=1e-6, atol=1e-9)
    assert (both.is_anomaly_stream.astype(bool) == both.is_anomaly_batch.astype(bool)).all()
    # each member's own reading, and the zone's prediction of it, as the batch path explains it
    got = np.array([json.loads(v)["pressure"] for v in both["values"]])
    np.testing.assert_allclose(got, both.pressure, atol=1e-3)
    expected = np.array([json.loads(v)["pressure"] for v in both["expected"]])
    np.testing.assert_allclose(expected, both.expected_pressure, rtol=1e-6, atol=1e-6)
    # PT-0001 at the too-late reading's step: not real there, so not scored in either path
    late = streamed["too_late"]
    assert not ((scores.sensor_id == "PT-0001") & (scores.event_time == late.timestamp)).any()


def test_anomalies_are_the_flagged_members_with_their_explanation(streamed):
    t = streamed["tables"]
    scores, anomalies = _times(t["scores"]), _times(t["anomalies"])
    flagged = scores[scores.is_anomaly == 1]
    assert len(anomalies) > 0, "the test day should hold some anomalies"
    assert sorted(zip(anomalies.sensor_id, anomalies.event_time)) == sorted(zip(flagged.sensor_id,
                                                                                 flagged.event_time))
    assert anomalies.explanation.notna().all() and anomalies.expected.notna().all()
    zone_of = dict(zip(streamed["registry"].sensor_id, streamed["registry"].zone))
    inc = t["incidents"]
    assert len(inc) > 0 and (inc.zone == inc.first_sensor.map(zone_of)).all()


def test_late_duplicate_and_unknown_readings_are_rejects(streamed):
    rej = _times(streamed["tables"]["rejects"])
    kinds = rej.reason.str.split(":").str[0]
    assert sorted(kinds) == ["duplicate", "late", "unknown_sensor", "unknown_sensor", "unknown_sensor"]
    late = rej[kinds == "late"].iloc[0]
    assert (late.sensor_id, late.event_time) == ("PT-0001", streamed["too_late"].timestamp)
    assert set(rej[kinds == "unknown_sensor"].sensor_id) == {"PT-0099"}
    assert rej[kinds == "duplicate"].sensor_id.tolist() == ["PT-0002"]


def test_every_line_is_counted_once_across_the_restart(streamed):
    t = streamed["tables"]
    b = t["batches"].sort_values("batch_id")
    assert b.batch_id.tolist() == list(range(len(b))) and len(b) >= FILES
    assert b.events.sum() == streamed["sent"]
    assert (b.events == b.scored + b.warmup + b.rejects).all()            # per batch, by arrival
    assert b.rejects.sum() == len(t["rejects"]) == 5
    # a reading waiting for its zone counts as warm-up where it arrived, its score comes later:
    # score rows + unscored readings (window warm-up, not real, and the one still pending) + rejects
    batch = streamed["batch"]
    unscored = int(batch.score.isna().sum()) + 1
    assert len(t["scores"]) + unscored + len(t["rejects"]) == streamed["sent"]
    assert b.scored.sum() + b.warmup.sum() == len(t["scores"]) + unscored
    assert b.scored.sum() <= len(t["scores"]) - 2                         # PT-0003's two waited
