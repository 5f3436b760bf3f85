"""The sink contract and store API pieces that need no server: records, retention schedule,
the shared upsert, filters, version merging, settings, and a SQLite store opened without rules."""
from __future__ import annotations

import pandas as pd
import pytest

from sentinel.config import ConfigError, load_settings
from sentinel.store import IncidentFilters, StoreError, open_store
from sentinel.store.client import merge_versions
from sentinel.store.sinks import base
from tests import records as R


def test_the_store_and_the_incident_rules_share_one_vocabulary():
    from sentinel.incidents import lifecycle
    assert base.STATUSES == lifecycle.STATUSES  # store sits below incidents: two copies, kept equal here
    assert base.STATUS_RANK == lifecycle.STATUS_RANK
    assert lifecycle.ACTIONS == ("ack", "close", "label")  # incident_actions.action


def test_batch_records_fill_empty_frames_and_check_the_batch_id():
    r = base.BatchRecords(7)
    assert list(r.anomalies.columns) == base.ANOMALY_COLUMNS and r.scores is None
    assert list(r.incidents.columns) == base.INCIDENT_STREAM_COLUMNS and r.incident_events.empty
    assert r.batch["batch_id"] == 7 and r.batch["written_at"].tzinfo is not None
    with pytest.raises(ValueError, match="batch record says batch 8"):
        base.BatchRecords(7, batch=base.batch_record(8))
    assert base.batch_record(1, max_event_time="2026-03-20T10:00:00")["max_event_time"] == R.T("10:00")


def test_retention_runs_first_then_every_n_batches():
    ret = base.Retention(days=3, every=10)
    assert [b for b in range(0, 35) if ret.due(b)] == [0, 10, 20, 30]
    assert ret.due(2)  # batch ids went back (a new checkpoint): start over
    assert not any(base.Retention(days=0).due(b) for b in range(5))
    assert ret.cutoff(pd.Timestamp("2026-03-10T12:00Z")) == pd.Timestamp("2026-03-07T12:00Z")
    assert ret.cutoff(None) is None


def test_incident_upsert_is_one_text_for_both_engines():
    lite = base.incident_upsert("incidents", "VALUES (?)")
    pg = base.incident_upsert('"s".incidents', "VALUES %s")
    assert lite.replace("VALUES (?)", "X").replace("INTO incidents", "INTO T") == \
        pg.replace("VALUES %s", "X").replace('INTO "s".incidents', "INTO T")
    for owned in base.INCIDENT_OPERATOR_COLUMNS:  # the stream never writes what operators own
        assert f'"{owned}"' not in lite
    assert '"detected_at" = COALESCE(i."detected_at", excluded."detected_at")' in lite
    assert lite.endswith('WHERE excluded."batch_id" >= i."batch_id"')


def test_incident_rows_keep_the_last_row_per_id():
    rows = pd.DataFrame([R.incident(**R.INC_A, batch_id=1), R.incident(**{**R.INC_A, "readings": 9}, batch_id=1)])
    out = base.incident_rows(rows)
    assert len(out) == 1 and out["readings"].tolist() == [9] and list(out.columns) == base.INCIDENT_STREAM_COLUMNS


def test_incident_filters_normalise_and_refuse_bad_values():
    f = IncidentFilters(status="new", kind="leak", sensors="PT-1", since="2026-03-20T10:00:00")
    assert (f.status, f.kind, f.sensors, f.since) == (("new",), ("leak",), ("PT-1",), R.T("10:00"))
    for kwargs, words in [({"status": "open"}, "unknown incident status 'open'"), ({"limit": 0}, "outside 1..1000"),
                          ({"limit": 1001}, "page with offset"), ({"offset": -1}, "negative"),
                          ({"since": R.T("11:00"), "until": R.T("10:00")}, "not before"),
                          ({"since": "yesterday-ish"}, "not a time")]:
        with pytest.raises(ConfigError, match=words):
            IncidentFilters(**kwargs)


def test_s3_versions_merge_to_the_newest_batch_with_the_highest_status():
    v1 = R.incident(**R.INC_B_OPEN, batch_id=1)
    v2 = R.incident(**{**R.INC_B_OPEN, "status": "closed"}, closed="11:00", batch_id=2)
    v3 = R.incident(**{**R.INC_B_OPEN, "readings": 7}, batch_id=3)  # "new" again: must not win
    merged = merge_versions(pd.DataFrame([v3, v1, v2]))
    assert len(merged) == 1
    row = merged.iloc[0]
    assert (row["status"], row["readings"], row["batch_id"]) == ("closed", 7, 3)
    assert row["detected_at"] == v1["detected_at"]


def test_scores_settings_moved_and_are_checked():
    s = load_settings()
    assert (s.sinks.write_scores, s.sinks.scores_retention_days) == (True, 30)
    with pytest.raises(ConfigError, match="'sinks.s3.write_scores' in --set was replaced by sinks.write_scores"):
        load_settings(None, ["sinks.s3.write_scores=true"])
    with pytest.raises(ConfigError, match="must not be negative"):
        load_settings(None, ["sinks.scores_retention_days=-1"])


def test_sqlite_store_without_rules_reads_but_refuses_writes(tmp_path):
    from sentinel.store.sinks.sqlite import SqliteSink
    sink = SqliteSink(tmp_path / "s.db")
    sink.setup()
    sink.write(R.batch(1))
    with open_store(f"sqlite:///{tmp_path / 's.db'}") as c:
        assert c.incidents()["incident_id"].tolist() == ["INC-B", "INC-C"]
        with pytest.raises(StoreError, match=r"opened without the incident rules: open it with open_store"):
            c.acknowledge("INC-B", "ann")
        assert c.incident("INC-B")["actions"] == []
        assert c.close() is None  # no arguments: releases the connections
    with pytest.raises(ConfigError, match="does not exist"):
        open_store(f"sqlite:///{tmp_path / 'missing.db'}")
    assert not (tmp_path / "missing.db").exists()
