"""`sentinel compare` on a hand-made SQLite store: episode and incident figures, the event table, JSON."""
import json
import sqlite3

import pandas as pd

from sentinel.cli import main

T = pd.Timestamp("2026-01-20T00:00:00Z")
M = pd.Timedelta(minutes=5)


def test_compare_prints_both_levels_and_each_injected_event_beside_its_incident(tmp_path, capsys):
    db, truth = tmp_path / "demo.db", tmp_path / "truth.csv"
    pd.DataFrame([{"sensor_id": "A", "anomaly_type": "burst", "start": (T + 12 * M).isoformat(),
                   "end": (T + 20 * M).isoformat()},
                  {"sensor_id": "B", "anomaly_type": "leak", "start": (T + 100 * M).isoformat(),
                   "end": (T + 140 * M).isoformat()}]).to_csv(truth, index=False)
    flags = [("A", T + k * M) for k in (12, 13, 14)] + [("C", T + 300 * M)]     # B missed, C false
    sensors = json.dumps([{"sensor_id": "A", "first_seen": (T + 12 * M).isoformat(),
                           "last_seen": (T + 14 * M).isoformat()}])
    with sqlite3.connect(db) as con:
        con.execute("CREATE TABLE anomalies (sensor_id TEXT, event_time TEXT, severity REAL)")
        con.executemany("INSERT INTO anomalies VALUES (?, ?, ?)", [(s, t.isoformat(), 2.0 if s == "A" else 1.1) for s, t in flags])
        con.execute("CREATE TABLE rejects (raw TEXT)")
        con.execute("CREATE TABLE incidents (incident_id TEXT, kind TEXT, zone TEXT, sensors TEXT, opened_at TEXT, "
                    "last_seen TEXT, peak_severity REAL, explanation TEXT)")
        con.execute("INSERT INTO incidents VALUES ('INC-1', 'burst', 'Norte', ?, ?, ?, 4.2, 'Burst in zone Norte')",
                    (sensors, (T + 12 * M).isoformat(), (T + 14 * M).isoformat()))
    assert main(["compare", "--truth", str(truth), "--db", str(db), "--json", str(tmp_path / "m.json")]) == 0
    out = capsys.readouterr().out
    assert "detected episodes: 2, false: 1, episode precision: 0.50" in out
    assert "below severity 1.5 (too weak to open an incident): 1 of 1" in out
    assert "incidents: 1 (0 false" in out
    row = next(line for line in out.splitlines() if "INC-1" in line)
    assert "burst" in row and "Norte" in row and "+0m" in row and "4.2" in row
    assert "(no incident: missed)" in out and "Burst in zone Norte" in out
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["incidents"]["incident_recall"] == 0.5 and len(m["incidents"]["per_event"]) == 2
    assert m["incidents"]["per_event"][0]["incident_id"] == "INC-1"
    assert main(["compare", "--truth", str(truth), "--db", str(db), "--no-events"]) == 0
    assert "INC-1" not in capsys.readouterr().out
