"""Operator actions and mutes: valid ones plan the writes, bad ones stop with one sentence."""
import pandas as pd
import pytest

from sentinel.config import ConfigError
from sentinel.incidents.lifecycle import (ActionError, UnknownIncident, merge_status, mutes_from, plan_action,
                                          validate_mute)

AT = pd.Timestamp("2026-01-20T08:00:00Z")


def test_acknowledge_then_close_plans_the_fields_and_the_audit_row():
    plan = plan_action("INC-1", {"status": "new"}, "ack", "j.smith", comment="on it", at=AT)
    assert plan.changes == {"status": "acknowledged", "acknowledged_by": "j.smith", "acknowledged_at": AT,
                            "comment": "on it"}
    assert plan.audit == {"incident_id": "INC-1", "action": "ack", "actor": "j.smith", "at": AT, "label": None,
                          "comment": "on it"}
    plan = plan_action("INC-1", {"status": "acknowledged"}, "close", "j.smith", label="confirmed", at=AT)
    assert plan.changes == {"status": "closed", "closed_by": "j.smith", "label": "confirmed",
                            "labelled_by": "j.smith", "labelled_at": AT}
    plan = plan_action("INC-1", {"status": "closed"}, "label", "a.b", label="false_alarm", at=AT)
    assert plan.changes == {"label": "false_alarm", "labelled_by": "a.b", "labelled_at": AT}
    assert plan_action("INC-1", {"status": "new"}, "close", "x").changes["status"] == "closed"   # new -> closed


@pytest.mark.parametrize("record,action,kw,cls,words", [
    (None, "ack", {}, UnknownIncident, "no incident 'INC-9'"),
    ({"status": "new"}, "snooze", {}, ActionError, "unknown incident action 'snooze'"),
    ({"status": "new"}, "label", {"label": "oops"}, ActionError, "unknown incident label 'oops'"),
    ({"status": "new"}, "label", {}, ActionError, "needs a label"),
    ({"status": "new"}, "ack", {"label": "bogus"}, ActionError, "unknown incident label"),
    ({"status": "acknowledged"}, "ack", {}, ActionError, "already acknowledged"),
    ({"status": "closed"}, "ack", {}, ActionError, "is closed and cannot become acknowledged"),
    ({"status": "closed"}, "close", {}, ActionError, "already closed"),
    ({"status": "weird"}, "ack", {}, ActionError, "unknown incident status 'weird'"),
    ({"status": "new"}, "ack", {"at": "2026-01-20T08:00:00"}, ActionError, "not a timezone-aware time"),
])
def test_bad_commands_stop_with_one_sentence_and_change_nothing(record, action, kw, cls, words):
    before = dict(record) if record else None
    with pytest.raises(cls) as err:
        plan_action("INC-9", record, action, "j.smith", **kw)
    msg = str(err.value)
    assert words in msg and "\n" not in msg
    assert isinstance(err.value, ConfigError)          # the CLI maps it to exit code 2
    assert record == before


def test_actor_and_comment_are_checked():
    with pytest.raises(ActionError, match="no actor"):
        plan_action("INC-1", {"status": "new"}, "ack", "  ")
    with pytest.raises(ActionError, match="keep it under"):
        plan_action("INC-1", {"status": "new"}, "ack", "x", comment="c" * 5000)


def test_status_merges_by_rank_never_back():
    assert merge_status("acknowledged", "new") == "acknowledged"
    assert merge_status("new", "closed") == "closed"
    assert merge_status(None, "new") == "new"
    with pytest.raises(ActionError):
        merge_status("new", "reopened")


def test_a_valid_mute_and_what_it_covers():
    m = validate_mute("PT-0001", None, "2026-01-20T08:00:00Z", "2026-01-20T10:00:00Z", "valve work", "ops",
                      known_sensors=["PT-0001"])
    assert m.mute_id.startswith("MUTE-") and m == validate_mute("PT-0001", "", "2026-01-20T08:00:00Z",
                                                                 "2026-01-20T10:00:00Z", "valve work", "ops")
    assert m.covers("PT-0001", "Norte", AT.value) and not m.covers("PT-0002", "Norte", AT.value)
    assert not m.covers("PT-0001", None, pd.Timestamp("2026-01-20T10:00:00Z").value)   # end excluded
    z = validate_mute(None, "Norte", AT, AT + pd.Timedelta(hours=1), actor="ops")
    assert z.covers("PT-0002", "Norte", AT.value) and not z.covers("PT-0002", "Sur", AT.value)
    rec = z.record(created_at=AT)
    assert rec["starts_at"] == AT and rec["zone"] == "Norte" and rec["created_at"] == AT
    assert mutes_from(pd.DataFrame([rec])) == [z]


@pytest.mark.parametrize("sensor,zone,start,end,words", [
    ("PT-1", "Norte", "2026-01-20T08:00:00Z", "2026-01-20T09:00:00Z", "exactly one of a sensor or a zone"),
    (None, None, "2026-01-20T08:00:00Z", "2026-01-20T09:00:00Z", "exactly one of a sensor or a zone"),
    ("PT-1", None, "2026-01-20T09:00:00Z", "2026-01-20T08:00:00Z", "not after its start"),
    ("PT-1", None, "2026-01-20T08:00:00Z", "2026-01-20T08:00:00Z", "not after its start"),
    ("PT-1", None, "2026-01-20T08:00:00", "2026-01-20T09:00:00Z", "not a timezone-aware time"),
    ("PT-1", None, None, "2026-01-20T09:00:00Z", "mute start is missing"),
    ("PT-9", None, "2026-01-20T08:00:00Z", "2026-01-20T09:00:00Z", "unknown sensor 'PT-9'"),
    (None, "Mars", "2026-01-20T08:00:00Z", "2026-01-20T09:00:00Z", "unknown zone 'Mars'"),
])
def test_bad_mutes_stop_with_one_sentence(sensor, zone, start, end, words):
    with pytest.raises(ActionError) as err:
        validate_mute(sensor, zone, start, end, "r", "ops", known_sensors=["PT-1"], known_zones=["Norte"])
    assert words in str(err.value) and "\n" not in str(err.value)
