"""The older system's air-quality events run with an example config and flag the 2nd, 4th
and 6th of the six reference lines (single readings with no history included)."""
from pathlib import Path

import pandas as pd

from sentinel.detect.batch import score_table
from sentinel.config import load_settings
from sentinel.ingest.events import parse_lines
from sentinel.detect.model import load_bundle
from sentinel.ingest.synthetic import simulate_air_quality
from sentinel.detect.training import fit_bundle

ROOT = Path(__file__).resolve().parents[2]
SIX = """{"id_sensor": "sensor_1", "timestamp": "2025-11-09T21:00:00Z", "nivelco2": 22.5, "nivelpm10": 45.0, "nivelmetano": 1013.0}
{"id_sensor": "sensor_3", "timestamp": "2025-11-09T21:01:00Z", "nivelco2": 24.0, "nivelpm10": 150.0, "nivelmetano": 1013.2}
{"id_sensor": "sensor_2", "timestamp": "2025-11-09T21:02:00Z", "nivelco2": 23.0, "nivelpm10": 50.0, "nivelmetano": 1012.5}
{"id_sensor": "sensor_3", "timestamp": "2025-11-09T21:03:00Z", "nivelco2": 180.5, "nivelpm10": 98.0, "nivelmetano": 1013.2}
{"id_sensor": "sensor_2", "timestamp": "2025-11-09T22:01:00Z", "nivelco2": 23.0, "nivelpm10": 50.0, "nivelmetano": 1014.5}
{"id_sensor": "sensor_2", "timestamp": "2025-11-09T22:02:00Z", "nivelco2": 23.0, "nivelpm10": 50.0, "nivelmetano": 1.5}"""


def test_six_reference_lines_flag_the_2nd_4th_and_6th(tmp_path):
    settings = load_settings(ROOT / "conf/examples/air_quality.toml", ["model.epochs=4", "train.report=false"])
    hist = simulate_air_quality(3, days=2)
    frame = hist.rename(columns={"id_sensor": "sensor_id", "timestamp": "event_time"})
    path, _ = fit_bundle(frame, settings, tmp_path / "air")
    bundle = load_bundle(str(path))
    parsed = parse_lines(SIX.splitlines(), settings.data)
    assert parsed.reject_reason.isna().all()
    events = pd.DataFrame([__import__("json").loads(line) for line in SIX.splitlines()])
    scored = score_table(bundle, events, settings)
    assert scored["is_anomaly"].tolist() == [0, 1, 0, 1, 0, 1]
    assert scored["score"].notna().all()  # every single reading scored, no warm-up
