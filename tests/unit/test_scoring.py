"""Score reductions, the Mahalanobis error model and alarm persistence on hand-checked cases."""
import numpy as np
import pytest

from sentinel.detect.error_model import ErrorModel, fit_error_model
from sentinel.detect.scoring import (BATCH_SIZES, batch_spans, flag, persist, persist_groups, recent_mask, recent_rule, reduce_errors, reduction,
                              scores_from_errors)
from sentinel.detect.training import split_validation

E = np.array([[3.0, 4.0, 0.0],
              [1.0, 1.0, 1.0]])


def test_plain_reductions():
    np.testing.assert_allclose(reduce_errors(E, "mean"), [7 / 3, 1.0])
    np.testing.assert_allclose(reduce_errors(E, "last"), [0.0, 1.0])
    np.testing.assert_allclose(reduce_errors(E, "max"), [4.0, 1.0])
    assert reduce_errors(np.empty((0, 3)), "mahalanobis").size == 0


def test_mahalanobis_with_identity_covariance_is_the_euclidean_norm():
    em = ErrorModel(np.zeros(3), np.eye(3))
    np.testing.assert_allclose(reduce_errors(E, "mahalanobis", em), [5.0, np.sqrt(3.0)])


def test_mahalanobis_by_hand_mean_and_diagonal_covariance():
    # mean (1, 1, 1), variances (4, 1, 1): row 0 -> sqrt((2/2)^2 + 3^2 + 1^2) = sqrt(11)
    em = ErrorModel(np.ones(3), np.linalg.inv(np.diag([4.0, 1.0, 1.0])))
    np.testing.assert_allclose(em.distance(E), [np.sqrt(11.0), 0.0])


def test_mahalanobis_by_hand_correlated_steps():
    # Two steps with covariance [[1, .5], [.5, 1]]: moving together is cheaper than apart.
    cov = np.array([[1.0, 0.5], [0.5, 1.0]])
    em = ErrorModel(np.zeros(2), np.linalg.inv(cov))
    together, apart = em.distance(np.array([[1.0, 1.0], [1.0, -1.0]]))
    assert together == pytest.approx(np.sqrt(2 / 1.5))   # e^T S^-1 e = 2 / (1 + .5)
    assert apart == pytest.approx(np.sqrt(2 / 0.5))      # 2 / (1 - .5)


def test_mahalanobis_needs_the_error_model_and_matching_length():
    with pytest.raises(ValueError, match="error model"):
        reduce_errors(E, "mahalanobis")
    with pytest.raises(ValueError, match="window length"):
        ErrorModel(np.zeros(4), np.eye(4)).distance(E)
    with pytest.raises(ValueError, match="unknown score reduction"):
        reduce_errors(E, "median")


def test_fitted_error_model_is_shrunk_invertible_and_round_trips():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(40, 1))
    errors = base + 0.01 * rng.normal(size=(40, 8))   # 8 nearly collinear steps: sample cov ~ singular
    em = fit_error_model(errors)
    assert 0 < em.params["shrinkage"] <= 1 and em.params["windows"] == 40
    np.testing.assert_allclose(em.mean, errors.mean(axis=0))
    assert np.all(np.linalg.eigvalsh(em.precision) > 0)
    again = ErrorModel.from_json(em.to_json())
    np.testing.assert_allclose(again.distance(errors), em.distance(errors))
    with pytest.raises(ValueError, match="too few"):
        fit_error_model(errors[:1])


def test_split_validation_by_time_drops_straddling_windows():
    starts = np.array([0, 10, 20, 30, 40, 50])
    ends = starts + 15                     # span 0..65, cut at 32
    older, newer, cut = split_validation(starts, ends, np.arange(6))
    assert cut == 32
    assert older.tolist() == [0, 1] and newer.tolist() == [4, 5]   # 2 and 3 straddle the cut


def test_recent_mask_by_hand():
    errors = np.array([[9.0, 9.0, 0.0, 0.0],    # mean 4.5, newest 2 steps 0: the anomaly has left
                       [0.0, 0.0, 9.0, 9.0],    # newest 2 carry it: current
                       [4.0, 4.0, 1.0, 1.0]])   # newest 2: 1.0 vs 0.4 * 2.5 = 1.0 -> still current
    assert recent_mask(errors, 2, 0.4).tolist() == [False, True, True]
    assert recent_mask(errors, 1, 0.5).tolist() == [False, True, False]
    assert recent_mask(errors, 0, 0.4).tolist() == [True, True, True]    # rule off


def _bundle(recent_steps=0, recent_ratio=0.0, threshold=None, reduce="mean"):
    from types import SimpleNamespace
    return SimpleNamespace(manifest={"score": {"reduce": reduce, "recent_steps": recent_steps,
                                               "recent_ratio": recent_ratio}},
                           error_model=None, threshold=threshold)


def test_recent_rule_caps_stale_windows_at_their_threshold_so_they_do_not_alarm():
    from sentinel.detect.threshold import Threshold
    errors = np.array([[9.0, 9.0, 0.0, 0.0],    # anomaly left: mean 4.5 capped at a's threshold 1.0
                       [0.0, 0.0, 9.0, 9.0],    # current: 4.5 stays
                       [9.0, 9.0, 0.0, 0.0],    # stale, sensor b (threshold 3.0): capped at 3.0
                       [0.4, 0.4, 0.0, 0.0]])   # stale but below the threshold anyway: 0.2 stays
    sids = np.array(["a", "a", "b", "a"])
    th = Threshold("per_sensor", 1.0, {}, {"b": 3.0})
    scores = scores_from_errors(_bundle(2, 0.4, th), errors, sids)
    np.testing.assert_allclose(scores, [1.0, 4.5, 3.0, 0.2])
    assert flag(_bundle(2, 0.4, th), scores, sids)[1].tolist() == [False, True, False, False]
    # rule off, or no threshold yet (calibration): the plain reduction
    np.testing.assert_allclose(scores_from_errors(_bundle(0, 0.4, th), errors, sids), [4.5, 4.5, 4.5, 0.2])
    np.testing.assert_allclose(scores_from_errors(_bundle(2, 0.4, None), errors, sids), [4.5, 4.5, 4.5, 0.2])


def test_bundles_without_score_settings_score_with_the_plain_mean():
    from types import SimpleNamespace
    old = SimpleNamespace(manifest={}, error_model=None, threshold=None)
    assert reduction(old) == "mean" and recent_rule(old) == (0, 0.0)
    np.testing.assert_allclose(scores_from_errors(old, E, np.array(["a", "a"])), [7 / 3, 1.0])


# ------------------------------------------------------------------- persistence
def test_persist_two_of_three_by_hand():
    alarms, tail = persist(np.array([1, 0, 1, 0, 0, 1]), 2, 3)
    assert alarms.astype(int).tolist() == [0, 0, 1, 0, 0, 0]
    assert tail.astype(int).tolist() == [0, 1]
    alarms, _ = persist(np.array([1, 1, 1, 0, 1, 0, 0]), 2, 3)
    assert alarms.astype(int).tolist() == [0, 1, 1, 1, 1, 0, 0]


def test_persist_one_of_one_is_the_raw_flags():
    f = np.array([0, 1, 1, 0, 1], dtype=bool)
    alarms, tail = persist(f, 1, 1)
    assert alarms.tolist() == f.tolist() and tail.size == 0


def test_persist_carries_the_prior_tail_across_calls():
    flags = np.array([1, 0, 1, 1, 0, 0, 1, 1], dtype=bool)
    whole, whole_tail = persist(flags, 3, 4)
    assert whole.astype(int).tolist() == [0, 0, 0, 1, 0, 0, 0, 0]   # only [1, 0, 1, 1] has 3 of 4
    parts, prior = [], None
    for chunk in (flags[:1], flags[1:3], flags[3:3], flags[3:7], flags[7:]):   # incl. an empty batch
        a, prior = persist(chunk, 3, 4, prior)
        parts.append(a)
    assert np.concatenate(parts).tolist() == whole.tolist()
    assert prior.tolist() == whole_tail.tolist() == [False, True, True]


def test_persist_prior_counts_and_short_history_is_unflagged():
    # prior [1, 1] then one flag: 3 of the last 3 -> alarm at once.
    alarms, tail = persist(np.array([1]), 3, 3, prior=np.array([1, 1]))
    assert alarms.tolist() == [True] and tail.astype(int).tolist() == [1, 1]
    # longer prior: only its newest n-1 count
    alarms, _ = persist(np.array([1]), 3, 3, prior=np.array([1, 1, 0]))
    assert alarms.tolist() == [False]
    # fewer flags than n-1 so far: the tail is as long as the history
    _, tail = persist(np.array([1]), 2, 4)
    assert tail.astype(int).tolist() == [1]


def test_persist_groups_keeps_sensors_apart():
    flags = np.array([1, 1, 0, 1, 1, 0, 1], dtype=bool)
    groups = np.array(["a", "a", "a", "b", "b", "c", "c"])
    alarms, tails = persist_groups(flags, groups, 2, 3, {"b": np.array([0, 1]), "c": np.array([1])})
    # a: no prior -> 0 1 1;  b: prior 0 1 -> 1 1;  c: prior 1 -> [1,0]: 0, [1,0,1]: 1
    assert alarms.astype(int).tolist() == [0, 1, 1, 1, 1, 0, 1]
    assert {k: v.astype(int).tolist() for k, v in tails.items()} == {"a": [1, 0], "b": [1, 1], "c": [0, 1]}
    # b's last flag of "a" must not leak into b's first window
    alarms, _ = persist_groups(np.array([1, 1, 1, 0]), np.array([1, 1, 2, 2]), 2, 2)
    assert alarms.astype(int).tolist() == [0, 1, 0, 0]


def test_persist_groups_equals_a_plain_loop_on_random_flags():
    rng = np.random.default_rng(1)
    groups = np.repeat(np.arange(30), rng.integers(0, 20, 30))
    flags = rng.random(groups.size) < 0.4
    priors = {g: rng.random(rng.integers(0, 6)) < 0.5 for g in range(0, 30, 2)}
    for m, n in ((1, 1), (1, 3), (2, 3), (3, 5), (4, 4)):
        alarms, tails = persist_groups(flags, groups, m, n, priors)
        for g in np.unique(groups):
            hist = list(priors.get(g, np.zeros(0, bool)))
            seq = hist + list(flags[groups == g])
            start = len(hist)
            want = [sum(seq[max(0, i - n + 1):i + 1]) >= m for i in range(start, len(seq))]
            assert alarms[groups == g].tolist() == want
            assert tails[g].tolist() == seq[max(0, len(seq) - (n - 1)):] if n > 1 else tails[g].size == 0


def test_persist_rejects_bad_arguments():
    with pytest.raises(ValueError, match="1 <= m <= n"):
        persist(np.array([1]), 3, 2)
    with pytest.raises(ValueError, match="contiguous"):
        persist_groups(np.array([1, 0, 1]), np.array(["a", "b", "a"]), 1, 2)


@pytest.mark.parametrize("m,batch", [(1, 4096), (255, 4096), (2500, 4096), (4096, 4096), (9000, 4096),
                                     (300, 64), (1100, 1024)])
def test_batch_spans_cover_the_rows_with_little_padding(m, batch):
    spans = batch_spans(m, batch)
    assert spans[0][0] == 0 and spans[-1][1] == m
    assert all(a == prev_b for (a, _), (_, prev_b) in zip(spans[1:], spans[:-1]))  # contiguous
    assert all(b - a <= batch for a, b in spans)
    padded = sum(next((s for s in BATCH_SIZES if s >= b - a), b - a) for a, b in spans)
    assert padded - m < 256 or batch < 256  # at most one call padded, by less than the smallest size
