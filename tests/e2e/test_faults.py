"""The fault-injection suite's short part (``benchmarks/faults.py --quick``): on a tiny feed, one
deploy job is SIGKILLed while its sinks write, loses PostgreSQL for 15 s and then the disk of its
SQLite store, is restarted from its checkpoint after each, and must end with exactly what an
uninterrupted run of the same events stored, in SQLite, PostgreSQL, S3 and on the alert topic.

The runner starts its own Kafka, PostgreSQL and S3 server (own ports and state dirs: it stops
and starts them), so this test needs none of the session's services; the disk fault needs root
(a tmpfs) and is left out, said so, without it. The full suite is ``make bench-faults``.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = [pytest.mark.spark, pytest.mark.services]
STORES = ("sqlite", "postgres", "s3")


def test_sigkill_postgres_down_and_disk_full_lose_and_duplicate_nothing(tmp_path):
    out = tmp_path / "faults.json"
    r = subprocess.run([sys.executable, "benchmarks/faults.py", "--quick", "--json", str(out)], cwd=ROOT,
                       capture_output=True, text=True, timeout=1500)
    assert out.exists(), (r.stdout + r.stderr)[-4000:]
    res = json.loads(out.read_text())
    (row,) = res["scenarios"]
    assert r.returncode == 0 and row["verdict"] == "PASS", (row.get("failed"), (r.stdout + r.stderr)[-4000:])
    ref = res["reference"]
    assert ref["anomalies"] > 0 and ref["incidents"] > 0 and ref["rejects"] > 0

    faults = {f["fault"]: f for f in row["faults"]}
    kill = faults["sigkill"]
    assert kill["in_store_uncommitted"], kill       # killed after the sinks wrote, before Spark committed
    down = faults["postgres-down"]
    assert down["retry_warnings"] >= 1 and down["errors"], down
    assert all(e.startswith("postgres sink: ") and "restart the job" in e for e in down["errors"])
    if "disk-full" in faults:
        disk = faults["disk-full"]
        assert "free space" in disk["error"] and str(disk["failed_batch"]) in disk["error"]
        assert disk["rows_of_failed_batch"] and sum(disk["rows_of_failed_batch"].values()) == 0  # rolled back
        assert disk["integrity"] == "ok"
    assert row["restarts"] >= len(faults)

    # every event once in every store; the reference's anomalies and incidents; nothing twice
    for s in STORES:
        st = row["stores"][s]
        assert st["events"] == st["accounted"] == row["sent"] == ref["sent"], (s, st)
        assert st["anomalies"] == st["anomalies_ref"] == ref["anomalies"] and st["duplicates"] == 0, (s, st)
        assert st["incidents"] == st["incidents_ref"] == ref["incidents"] and not st["incidents_differing"], (s, st)
        assert st["rejects"] == st["rejects_expected"] == ref["rejects"], (s, st)
    al = row["alerts"]
    assert al["anomalies"] == al["anomalies_distinct"] == al["anomalies_ref"] == ref["anomalies"]
    assert al["incident_events"] == al["incident_events_distinct"] == ref["incident_events"]
    assert row["duplicates"] == 0
    assert "sigkill+postgres-down+disk-full" in r.stdout and "PASS" in r.stdout   # the table was printed
