"""The fault-injection suite's short part (``benchmarks/faults.py --quick``): on a tiny feed, one
deploy job is SIGKILLed while its sinks write (a batch in the stores, not committed), loses
PostgreSQL for 5 s (less than the sink's retries: it carries on), then the disk of its SQLite
store (the batch fails in one sentence, nothing of it kept), is restarted from its checkpoint
after the kill and the disk, and must end with exactly what an uninterrupted run of the same
events stored, in SQLite, PostgreSQL, S3 and on the alert topic (docs/faults.md).

The runner starts its own Kafka, PostgreSQL and S3 server (ports the kernel picks, state in a
folder of this test's), so it needs none of the session's services and never meets them; the
disk fault needs root (a tmpfs) and is left out, said so, without it. A runner past the timeout
gets SIGTERM (it stops what it started), then SIGKILL, then ``--cleanup`` ends what it left.
The full suite is ``make bench-faults``.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = [pytest.mark.spark, pytest.mark.services]
STORES = ("sqlite", "postgres", "s3")
TIMEOUT_S = 1500  # 12 to 18 minutes measured on a loaded 2-core machine (docs/faults.md)


def _run_quick(out: Path, state: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "benchmarks/faults.py", "--quick", "--json", str(out), "--cache-dir", str(state)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        stdout, _ = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)  # the runner unwinds: job, producers, services stopped
        try:
            stdout, _ = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            stdout, _ = proc.communicate()
        pytest.fail(f"benchmarks/faults.py --quick still running after {TIMEOUT_S} s: {stdout[-3000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, "")


def test_sigkill_postgres_down_and_disk_full_lose_and_duplicate_nothing():
    # not pytest's tmp_path: its parents are 0700 and PostgreSQL runs as its own user
    state = Path(tempfile.mkdtemp(prefix="sentinel-faults-test-"))
    out = state.parent / f"{state.name}.json"
    try:
        r = _run_quick(out, state)
        left_behind = state.exists()   # the runner deletes its state folder at the end
    finally:  # whatever the runner left (it was killed): its children and services, by its state folder
        subprocess.run([sys.executable, "benchmarks/faults.py", "--cleanup", "--cache-dir", str(state)], cwd=ROOT,
                       capture_output=True, timeout=300, check=False)
        shutil.rmtree(state, ignore_errors=True)
    assert out.exists(), r.stdout[-4000:]
    res = json.loads(out.read_text())
    out.unlink()
    (row,) = res["scenarios"]
    assert r.returncode == 0 and row["verdict"] == "PASS", (row.get("failed"), r.stdout[-4000:])
    ref = res["reference"]
    assert ref["anomalies"] > 0 and ref["incidents"] > 0 and ref["rejects"] > 0

    faults = {f["fault"]: f for f in row["faults"]}
    kill = faults["sigkill"]
    assert kill["in_store_uncommitted"], kill       # killed after the sinks wrote, before Spark committed
    down = faults["postgres-down"]
    assert down["retry_warnings"] >= 1 and not down["errors"] and down["attempt_survived"], down
    if "disk-full" in faults:
        disk = faults["disk-full"]
        assert "free space" in disk["error"] and str(disk["failed_batch"]) in disk["error"]
        assert disk["error"].startswith("sqlite store ") and "\n" not in disk["error"]
        assert disk["rows_of_failed_batch"] and sum(disk["rows_of_failed_batch"].values()) == 0  # rolled back
        assert disk["integrity"] == "ok"
        assert [a["rc"] for a in row["attempts"]] == [-9, 1, 0]   # killed, failed in one sentence, completed
    else:
        assert "left_out" in row and [a["rc"] for a in row["attempts"]] == [-9, 0]

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
    assert not left_behind
