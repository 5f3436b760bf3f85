"""score_details with the real tiny Keras model: the same scores as score_windows, expected values in
metres, and a tracker run over the flagged readings of the tiny labelled network."""
import json

import numpy as np
import pandas as pd

from sentinel.detect import scoring
from sentinel.detect.batch import score_table, table_windows
from sentinel.detect.explain import detail_columns
from sentinel.detect.model import load_bundle
from sentinel.incidents.kinds import KINDS
from sentinel.incidents.tracker import IncidentTracker


def test_score_details_matches_score_windows_and_explains_in_metres(tiny_bundle, tiny_settings, tiny_network):
    bundle = load_bundle(str(tiny_bundle))
    readings = tiny_network.readings.reset_index(drop=True)
    _, (w, wt, sids, _) = table_windows(readings, tiny_settings, bundle.features, bundle.length,
                                        int(bundle.manifest["window"]["max_gap_s"]))
    d = scoring.score_details(bundle, w, wt, sids)
    np.testing.assert_array_equal(d.scores, scoring.score_windows(bundle, w, wt, sids))
    ex = d.explain
    np.testing.assert_allclose(ex.feature_share, 1.0)                       # one feature carries all of it
    assert ((ex.recent_share >= 0) & (ex.recent_share <= 1)).all()
    assert ((ex.error_steps >= 1) & (ex.error_steps <= bundle.length)).all()
    np.testing.assert_allclose(ex.observed[:, 0], w[:, -1, 0])
    # on normal windows the expected value is a pressure near the reading, in metres
    normal = d.scores < bundle.threshold.for_sensors(sids)
    assert np.median(np.abs(ex.deviation[normal])) < 1.0
    assert np.median(np.abs(ex.deviation[~normal])) > np.median(np.abs(ex.deviation[normal]))

    plain = score_table(bundle, readings, tiny_settings)
    rich = score_table(bundle, readings, tiny_settings, details=True)
    pd.testing.assert_frame_equal(rich[plain.columns], plain)
    assert list(rich.columns[len(plain.columns):]) == detail_columns(bundle.features)

    # the tracker over the flagged readings in 2-hour micro-batches, state through JSON each time
    rich["event_time"] = pd.to_datetime(rich["timestamp"], utc=True)
    flagged = rich[rich["is_anomaly"] == 1]
    make = dict(settings=tiny_settings, features=bundle.features, window_length=bundle.length,
                registry=tiny_network.sensors, model_version=bundle.version)
    state, records = IncidentTracker.from_settings(**make).to_json(), {}
    edges = pd.date_range(rich["event_time"].min().floor("2h"), rich["event_time"].max() + pd.Timedelta("2h"), freq="2h")
    for i, (a, b) in enumerate(zip(edges[:-1], edges[1:])):
        t = IncidentTracker.from_json(state, **make)
        out = t.update(flagged[(flagged.event_time >= a) & (flagged.event_time < b)], b, batch_id=i)
        state = t.to_json()
        for r in out.incidents.to_dict("records"):
            records[r["incident_id"]] = r
    assert 1 <= len(records) < len(flagged) / 5                              # far fewer incidents than rows
    for r in records.values():
        assert r["kind"] in KINDS and " m read, " in r["explanation"] and json.loads(r["sensors"])
