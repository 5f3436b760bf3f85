"""Window assembly and scaling: hand-built arrays, streaming chunks == batch."""
import numpy as np
import pytest

from sentinel.detect.windows import (DUPLICATE, LATE, NS_PER_S, WARMUP, WINDOW, Scaler, WindowState,
                              assemble, calendar_features, sensor_windows)

S = NS_PER_S


def ts(*secs):
    return np.array(secs, dtype=np.int64) * S


def test_first_windows_wait_for_w_readings():
    res = assemble(ts(0, 60, 120, 180), np.array([[1.], [2.], [3.], [4.]]), None, 3, 600 * S)
    assert res.status.tolist() == [WARMUP, WARMUP, WINDOW, WINDOW]
    assert res.windows[:, :, 0].tolist() == [[1, 2, 3], [2, 3, 4]]
    assert res.window_times.tolist() == [ts(0, 60, 120).tolist(), ts(60, 120, 180).tolist()]
    # state keeps the newest W-1 readings only
    assert res.state.times.tolist() == ts(120, 180).tolist()
    assert res.state.last_time == 180 * S


def test_out_of_order_input_is_sorted_by_event_time():
    res = assemble(ts(120, 0, 60), np.array([[3.], [1.], [2.]]), None, 3, 600 * S)
    assert res.status.tolist() == [WINDOW, WARMUP, WARMUP]
    assert res.windows[0, :, 0].tolist() == [1, 2, 3]


def test_gap_longer_than_max_gap_restarts_the_window():
    res = assemble(ts(0, 60, 120, 2000, 2060, 2120), np.arange(6.).reshape(-1, 1), None, 3, 600 * S)
    assert res.status.tolist() == [WARMUP, WARMUP, WINDOW, WARMUP, WARMUP, WINDOW]
    assert res.windows[:, :, 0].tolist() == [[0, 1, 2], [3, 4, 5]]


def test_late_and_duplicate_readings_are_not_windowed():
    first = assemble(ts(0, 60, 120), np.array([[1.], [2.], [3.]]), None, 3, 600 * S)
    res = assemble(ts(60, 120, 180, 180), np.array([[9.], [9.], [4.], [5.]]), first.state, 3, 600 * S)
    assert res.status.tolist() == [LATE, DUPLICATE, WINDOW, DUPLICATE]
    assert res.windows[0, :, 0].tolist() == [2, 3, 4]


def test_multivariate_windows_keep_feature_order():
    vals = np.array([[1., 10.], [2., 20.], [3., 30.]])
    res = assemble(ts(0, 1, 2), vals, None, 2, 10 * S)
    assert res.windows.shape == (2, 2, 2)
    assert res.windows[1].tolist() == [[2, 20], [3, 30]]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_streaming_chunks_equal_the_batch_path(seed):
    rng = np.random.default_rng(seed)
    n = 400
    t = np.cumsum(rng.choice([60, 60, 60, 900], n)).astype(np.int64) * S  # some gaps > max_gap
    v = rng.normal(size=(n, 1))
    w_batch, t_batch, _ = sensor_windows(t, v, 8, 600 * S)
    state, windows, times = WindowState(), [], []
    cuts = np.sort(rng.choice(np.arange(1, n), 30, replace=False))
    for chunk in np.split(np.arange(n), cuts):
        order = rng.permutation(chunk)  # arrival order within a micro-batch is arbitrary
        res = assemble(t[order], v[order], state, 8, 600 * S)
        state = res.state
        assert not np.isin(res.status, [LATE, DUPLICATE]).any()
        windows.append(res.windows)
        times.append(res.window_times)
    np.testing.assert_array_equal(np.concatenate(windows), w_batch)
    np.testing.assert_array_equal(np.concatenate(times), t_batch)


def test_stride_keeps_every_kth_window():
    t = np.arange(20, dtype=np.int64) * 60 * S
    w, _, end = sensor_windows(t, np.arange(20.).reshape(-1, 1), 4, 600 * S, stride=3)
    assert end.tolist() == [3, 6, 9, 12, 15, 18]
    assert w[1, :, 0].tolist() == [3, 4, 5, 6]


def test_calendar_features_hour_and_weekend():
    # 2026-01-03 is a Saturday; 06:00 UTC is a quarter of the day.
    sat_6am = np.datetime64("2026-01-03T06:00:00", "ns").astype(np.int64)
    mon_0am = np.datetime64("2026-01-05T00:00:00", "ns").astype(np.int64)
    f = calendar_features(np.array([[sat_6am, mon_0am]]))
    np.testing.assert_allclose(f[0, 0], [1.0, 0.0, 1.0], atol=1e-9)
    np.testing.assert_allclose(f[0, 1], [0.0, 1.0, 0.0], atol=1e-9)


def test_scaler_is_per_sensor_with_global_fallback():
    ids = np.array(["a", "a", "b", "b"])
    vals = np.array([[10.], [12.], [100.], [104.]])
    sc = Scaler.fit(["p"], ids, vals)
    w = np.array([[[11.], [12.]], [[102.], [104.]], [[56.5], [56.5]]])
    out = sc.transform(w, np.array(["a", "b", "unknown"]))
    np.testing.assert_allclose(out[0, :, 0], [0.0, 1.0])
    np.testing.assert_allclose(out[1, :, 0], [0.0, 1.0])
    np.testing.assert_allclose(out[2, :, 0], (56.5 - vals.mean()) / vals.std())
    again = Scaler.from_json(sc.to_json())
    np.testing.assert_allclose(again.transform(w, np.array(["a", "b", "unknown"])), out)


def test_constant_sensor_does_not_divide_by_zero():
    sc = Scaler.fit(["p"], np.array(["a", "a"]), np.array([[5.], [5.]]))
    out = sc.transform(np.array([[[5.], [6.]]]), np.array(["a"]))
    assert np.isfinite(out).all()


def test_assemble_many_equals_one_sensor_at_a_time_across_batches():
    """Many sensors interleaved, shuffled, with gaps, duplicates and late readings, fed in
    four batches: the vectorised path gives every sensor the windows and fates that
    `assemble` gives it alone."""
    from sentinel.detect.windows import NO_TIME, assemble_many
    rng = np.random.default_rng(3)
    n_sensors, length, gap = 5, 4, 600 * S
    rows = []
    for s in range(n_sensors):
        t = np.cumsum(rng.choice([60, 60, 60, 900], size=40)) * S  # some gaps longer than max_gap
        rows += [(s, ti, float(s * 100 + i)) for i, ti in enumerate(t)]
    rows += [rows[7], rows[50]]  # duplicates
    data = np.array(rows, dtype=object)[rng.permutation(len(rows))]
    batches = np.array_split(np.arange(len(data)), 4)
    data = np.concatenate([data, np.array([rows[3]], dtype=object)])  # a late reading at the very end
    batches[-1] = np.append(batches[-1], len(data) - 1)

    single = {s: WindowState() for s in range(n_sensors)}
    tail_c, tail_t, tail_v = np.empty(0, int), np.empty(0, int), np.empty((0, 1))
    last = np.full(n_sensors, NO_TIME)
    for b in batches:
        codes = data[b, 0].astype(int)
        t = data[b, 1].astype(np.int64)
        v = data[b, 2].astype(float).reshape(-1, 1)
        many = assemble_many(codes, t, v, tail_c, tail_t, tail_v, last, length, gap)
        tail_c, tail_t, tail_v, last = many.tail_codes, many.tail_times, many.tail_values, many.last_time
        for s in range(n_sensors):
            mine = np.nonzero(codes == s)[0]
            one = assemble(t[mine], v[mine], single[s], length, gap)
            single[s] = one.state
            assert many.status[mine].tolist() == one.status.tolist()
            has = one.window_row >= 0
            np.testing.assert_array_equal(many.windows[many.window_row[mine][has]], one.windows[one.window_row[has]])
            np.testing.assert_array_equal(many.window_times[many.window_row[mine][has]],
                                          one.window_times[one.window_row[has]])
            assert tail_t[tail_c == s].tolist() == one.state.times.tolist()
            assert last[s] == one.state.last_time
    assert (many.status == LATE).sum() >= 1


def test_point_model_keeps_no_tail_but_remembers_the_newest_time():
    res = assemble(ts(0, 60), np.array([[1.], [2.]]), None, 1, 600 * S)
    assert res.status.tolist() == [WINDOW, WINDOW] and res.state.times.size == 0
    again = assemble(ts(60, 30), np.array([[2.], [3.]]), res.state, 1, 600 * S)
    assert again.status.tolist() == [DUPLICATE, LATE]
