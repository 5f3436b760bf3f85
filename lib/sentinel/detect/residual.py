"""The cross-channel residual detector (``model.kind = "residual"``): each channel predicted from
the others, scored on what the prediction cannot explain.

Channels are the features of a multivariate sensor (``mode = "features"``: a pump rig's pressure,
flow, current, voltage ...) or the sensors of a zone (``mode = "zone"``: a water network's
pressure loggers, aligned per time step by :mod:`sentinel.detect.align`). Demand, tanks and pumps
move every channel together; a leak, a blockage or a broken sensor changes how one channel
relates to the others. Per group (the pooled sensors, or a zone):

* **Model.** Channels are standardised (features: with each sensor's own mean and std, as the
  autoencoder does; zone: with each member's), joined with hour-of-day and weekend columns when
  the training spans two days or more, and each channel is regressed on all other columns by
  ridge regression. All C regressions come from one inverse: with ``P = (A'A/n + ridge I)^-1``
  the residual of channel j is ``(A P)_j / P_jj`` (the conditional-Gaussian identity). Channels
  whose training record is a straight line in time (``residual.trend_r2``: a motor warming up
  during a 7-minute recording) are *decoupled*: any relation learned between a trend and the rest
  is spurious, so they neither predict nor are predicted.
* **Robust to a broken channel.** A channel whose standardised residual exceeds
  ``residual.exclude_z`` at a time step (a stuck logger, a drifting sensor, a member filled with
  its training mean) is left out of the others' predictions at that step: the regression is
  conditioned on the remaining channels only (Schur complement of ``P``), so one faulty sensor does
  not make its neighbours alarm.
* **Scales from cross-fitting.** The residual scale of each channel and the calibration scores
  come from ``residual.folds`` time blocks, each predicted by a model fitted on the others: the
  calibration sees what extrapolating half the record costs, not the in-sample fit.
* **Score.** ``z`` = residual / scale per step. For each scale k of ``residual.scales`` the mean of
  the newest k steps' z (readings with ``|z| > residual.mask_z`` left out of k > 1: a fault's big
  readings do not keep longer scales alarmed after it ended), divided by that mean's cross-fitted
  spread and squared; the channel score is the largest over the scales (k = 1: ``z**2``). A
  sustained small shift (a leak) shows at the longer scales, a spike at k = 1. Zone mode with
  ``residual.cusum_k`` > 0 adds a windowed Page (CUSUM) test per member (:func:`page_cusum`): the
  largest sum of ``-z - k`` (``residual.cusum_sides = "both"``: or of ``z - k``) over the newest j
  steps, j up to ``residual.cusum_steps``, divided by a per-member factor that puts its
  calibration tail on the fixed scales' (:func:`page_norm`); it adds up a persistent shift of any
  length up to the window without choosing the length in advance. Features mode
  scores a window by the mean over its channels, zone mode scores every member (one row per
  window and member, window-major: :func:`scored_rows`).
* **Expected values** are the predictions, in the channel's units ("41.2 m expected, 35.1 m read").
* **Drift tracking** (features mode, ``residual.adapt``): a bounded level/slope tracker
  (:mod:`sentinel.detect.adapt`) follows the decoupled trend channels from where training ended;
  it is sequential per sensor (:func:`score` takes and updates its state).

Saved as ``residual.json`` in the bundle (plain numbers: loading it needs no Keras). Pure numpy.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from sentinel.detect import rules
from sentinel.detect.adapt import DriftAdapter, residual_trend

FILE_NAME = "residual.json"
HARMONICS = 3                 # hour-of-day harmonics in the calendar columns
CALENDAR_MIN_DAYS = 2.0       # residual.calendar = "auto": calendar columns from this much training on
STUCK_SEVERITY = 1.5          # a stuck channel's score is raised to this times its threshold
# residual.scales = [] (auto): a network's 5-minute residuals are white, so a leak's small
# sustained shift adds up over 30 min and 2 h; a short multivariate record extrapolates, and
# means over its newest steps add its bias up too (measured on the tuning seeds, docs/detection.md).
AUTO_SCALES = {"zone": [1, 6, 24], "features": [1]}
NS_PER_DAY = 86400 * 1_000_000_000
MIN_ROWS = 40                 # fewest complete training rows (time steps) a group needs


def calendar_columns(times_ns: np.ndarray) -> np.ndarray:
    """(...,) ns UTC times -> (..., 2 * HARMONICS + 1): sin/cos of 1..3 times the day fraction, weekend."""
    t = np.asarray(times_ns, dtype=np.int64)
    secs = t // 1_000_000_000
    frac = (secs % 86400) / 86400.0
    cols = []
    for h in range(1, HARMONICS + 1):
        cols += [np.sin(2 * np.pi * h * frac), np.cos(2 * np.pi * h * frac)]
    cols.append(((secs // 86400 + 3) % 7 >= 5).astype(np.float64))  # 1970-01-01 was a Thursday
    return np.stack(cols, axis=-1)


def trend_dominated(x: np.ndarray, r2: float = 0.8) -> np.ndarray:
    """(C,) True for channels whose readings (n, C, in time order) are mostly a straight line in
    time: the share of variance a linear trend explains is at least ``r2``."""
    x = np.asarray(x, dtype=np.float64)
    t = np.arange(len(x), dtype=np.float64)
    tc, xc = t - t.mean(), x - x.mean(0)
    b = (tc[:, None] * xc).sum(0) / max((tc ** 2).sum(), 1e-300)
    ss = np.maximum((xc ** 2).sum(0), 1e-300)
    return 1 - ((xc - b * tc[:, None]) ** 2).sum(0) / ss >= r2


@dataclass
class LinearResidual:
    """One group's ridge model over C channels and K calendar columns (standardised inside)."""

    mean: np.ndarray          # (C,) channel means (the group's input units)
    sd: np.ndarray            # (C,)
    cal_mean: np.ndarray      # (K,)
    cal_sd: np.ndarray        # (K,)
    theta: np.ndarray         # (C+K, C+K) ridge-regularised precision of the standardised columns
    scale: np.ndarray         # (C,) residual scale (cross-fitted), standardised units
    decoupled: np.ndarray     # (C,) bool

    @property
    def n_channels(self) -> int:
        return int(self.mean.size)

    @classmethod
    def fit(cls, x: np.ndarray, cal: np.ndarray | None, ridge: float,
            decoupled: np.ndarray | None = None) -> "LinearResidual":
        x = np.asarray(x, dtype=np.float64)
        n, c = x.shape
        cal = np.zeros((n, 0)) if cal is None else np.asarray(cal, dtype=np.float64)
        mean, sd = x.mean(0), np.maximum(x.std(0), 1e-9)
        cal_mean, cal_sd = cal.mean(0), np.maximum(cal.std(0), 1e-9)
        a = np.column_stack([(x - mean) / sd, (cal - cal_mean) / cal_sd])
        g = a.T @ a / n
        dec = np.zeros(c, dtype=bool) if decoupled is None else np.asarray(decoupled, dtype=bool)
        for j in np.nonzero(dec)[0]:       # a decoupled channel neither predicts nor is predicted
            keep = g[j, j]
            g[j, :], g[:, j] = 0.0, 0.0
            g[j, j] = keep
        theta = np.linalg.inv(g + ridge * np.eye(g.shape[0]))
        theta = (theta + theta.T) / 2
        model = cls(mean, sd, cal_mean, cal_sd, theta, np.ones(c), dec)
        z, _ = model.predict(model.inputs(x, cal), 0.0)
        model.scale = np.maximum(z.std(0), 1e-9)   # in-sample; crossfit() sets the honest one
        return model

    def inputs(self, x: np.ndarray, cal: np.ndarray | None) -> np.ndarray:
        """(..., C) channel values and (..., K) calendar columns -> (..., C+K) standardised."""
        x = np.asarray(x, dtype=np.float64)
        parts = [(x - self.mean) / self.sd]
        if self.cal_mean.size:
            parts.append((np.asarray(cal, dtype=np.float64) - self.cal_mean) / self.cal_sd)
        return np.concatenate(parts, axis=-1)

    def predict(self, a: np.ndarray, exclude_z: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        """(n, C+K) standardised rows -> ``(z, predicted)``, both (n, C) in standardised units
        (z = residual / scale).

        With ``exclude_z`` > 0, a row's worst channel, when its ``|z|`` exceeds ``exclude_z``, is
        left out of the other channels' predictions (they are conditioned on the rest) and is
        predicted from the rest itself; then the next worst, while one exceeds it and at least two
        channels remain. One at a time: a broken channel first drags every prediction with it.
        """
        th, c = self.theta, self.n_channels
        a = np.asarray(a, dtype=np.float64)
        d = np.diag(th)[:c]
        resid = (a @ th)[:, :c] / d
        pred = a[:, :c] - resid
        z = resid / self.scale
        if not exclude_z or c < 3 or a.shape[0] == 0:
            return z, pred
        # scale = k_j / sqrt(P_jj): k_j carries the cross-fit inflation into the reduced models
        k = self.scale * np.sqrt(d)
        excl = np.zeros(z.shape, dtype=bool)
        can = ~self.decoupled                     # a decoupled channel predicts nothing anyway
        for _ in range(c - 2):
            mag = np.where(excl | ~can[None, :] | ~np.isfinite(z), -np.inf, np.abs(z))
            worst = mag.argmax(axis=1)
            grow = mag[np.arange(len(z)), worst] > exclude_z
            grow |= (~np.isfinite(z) & can[None, :] & ~excl).any(axis=1)   # NaN inputs are left out first
            grow &= excl.sum(axis=1) < c - 2
            if not grow.any():
                break
            rows_g = np.nonzero(grow)[0]
            nan_first = ~np.isfinite(z[rows_g]) & can[None, :] & ~excl[rows_g]
            pick = np.where(nan_first.any(axis=1), nan_first.argmax(axis=1), worst[rows_g])
            excl[rows_g, pick] = True
            pats, inv = np.unique(excl[rows_g], axis=0, return_inverse=True)
            inv = np.asarray(inv).ravel()
            for p_i, pat in enumerate(pats):
                rows = rows_g[inv == p_i]
                out = np.nonzero(pat)[0]
                keep = np.setdiff1d(np.arange(th.shape[0]), out)
                t_oo_inv = np.linalg.inv(th[np.ix_(out, out)])
                t_r = th[np.ix_(keep, keep)] - th[np.ix_(keep, out)] @ t_oo_inv @ th[np.ix_(out, keep)]
                ar = np.nan_to_num(a[np.ix_(rows, keep)])
                kept = keep[keep < c]
                pos = np.searchsorted(keep, kept)
                dr = np.diag(t_r)[pos]
                r_kept = (ar @ t_r)[:, pos] / dr
                z[np.ix_(rows, kept)] = r_kept / (k[kept] / np.sqrt(dr))
                pred[np.ix_(rows, kept)] = a[np.ix_(rows, kept)] - r_kept
                cond = -(t_oo_inv @ th[np.ix_(out, keep)])   # E[a_out | a_keep] = cond @ a_keep
                p_out = ar @ cond.T
                z[np.ix_(rows, out)] = (a[np.ix_(rows, out)] - p_out) / (k[out] * np.sqrt(np.diag(t_oo_inv)))
                pred[np.ix_(rows, out)] = p_out
        return z, pred

    def to_dict(self) -> dict:
        return {"mean": self.mean.tolist(), "sd": self.sd.tolist(), "cal_mean": self.cal_mean.tolist(),
                "cal_sd": self.cal_sd.tolist(), "theta": self.theta.tolist(), "scale": self.scale.tolist(),
                "decoupled": self.decoupled.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> "LinearResidual":
        f = lambda k: np.asarray(d[k], dtype=np.float64)  # noqa: E731
        return cls(f("mean"), f("sd"), f("cal_mean"), f("cal_sd"), f("theta"), f("scale"),
                   np.asarray(d["decoupled"], dtype=bool))


def time_blocks(n: int, k: int) -> list[np.ndarray]:
    """Indices 0..n-1 cut into k consecutive blocks of (nearly) equal size."""
    return [b for b in np.array_split(np.arange(n), k) if b.size]


def crossfit(x: np.ndarray, cal: np.ndarray | None, folds: int, ridge: float, decoupled: np.ndarray | None,
             exclude_z: float = 0.0) -> tuple[LinearResidual, np.ndarray]:
    """A model on all of ``x`` (n, C; time order) with its residual scale from time-blocked
    cross-fitting; returns ``(model, out-of-fold z (n, C))``.

    Each block is predicted by a model fitted on the other blocks; its residuals, in that model's
    standardised units, are converted to the full model's (``* fold sd / full sd``).
    """
    x = np.asarray(x, dtype=np.float64)
    full = LinearResidual.fit(x, cal, ridge, decoupled)
    raw = np.empty_like(x)
    for blk in time_blocks(len(x), folds):
        rest = np.ones(len(x), dtype=bool)
        rest[blk] = False
        m = LinearResidual.fit(x[rest], None if cal is None else cal[rest], ridge, decoupled)
        zb, _ = m.predict(m.inputs(x[blk], None if cal is None else cal[blk]), exclude_z)
        raw[blk] = zb * m.scale * (m.sd / full.sd)
    full.scale = np.maximum(raw.std(axis=0), 1e-9)
    return full, raw / full.scale


def scale_means(z: np.ndarray, scales: list[int], mask_z: float) -> dict[int, np.ndarray]:
    """(m, W, C) z windows -> {k: ((m, C) mean of the newest k steps, (m, C) readings counted)}.

    Readings with ``|z| > mask_z`` (if ``mask_z`` > 0) and non-finite ones are left out of k > 1.
    """
    out = {}
    for k in scales:
        seg = z[:, -k:, :]
        if k == 1:
            out[k] = (seg[:, 0, :], np.isfinite(seg[:, 0, :]).astype(np.int64))
            continue
        valid = np.isfinite(seg)
        if mask_z:
            valid &= np.abs(np.where(valid, seg, 0.0)) <= mask_z
        cnt = valid.sum(axis=1)
        tot = np.where(valid, seg, 0.0).sum(axis=1)
        out[k] = (tot / np.maximum(cnt, 1), cnt)
    return out


@dataclass(frozen=True)
class PageTest:
    """The windowed Page (CUSUM) term of a group's channel scores (:func:`page_cusum`)."""

    k: float                  # reference, z units: shifts smaller than this do not add up
    steps: int                # newest steps of the window it runs over
    sides: str                # "both" | "drop" (only z < 0 adds up: a leak lowers pressure)
    norm: np.ndarray          # (C,) the statistic is divided by this (page_norm)


def page_cusum(z: np.ndarray, steps: int, k: float, mask_z: float, sides: str = "both") -> np.ndarray:
    """(m, W, C) z windows -> (m, C) windowed Page statistic: the largest over j = 0..steps of
    the sum over the newest j steps of ``-z - k`` (a drop; ``sides = "both"``: also of ``z - k``).

    That is Page's CUSUM ``S_t = max(0, S_{t-1} + x_t)`` started at 0 ``steps`` steps back, so the
    window holds all its state. Readings with ``|z| > mask_z`` (if ``mask_z`` > 0) and non-finite
    ones add nothing (left out, as from the longer scales).
    """
    seg = z[:, -steps:, :][:, ::-1, :]           # newest first
    valid = np.isfinite(seg)
    if mask_z:
        valid &= np.abs(np.where(valid, seg, 0.0)) <= mask_z
    out = np.zeros(z.shape[0:1] + z.shape[2:])
    for sign in ((-1.0, 1.0) if sides == "both" else (-1.0,)):
        x = np.where(valid, sign * np.where(valid, seg, 0.0) - k, 0.0)
        out = np.maximum(out, np.cumsum(x, axis=1).max(axis=1))
    return out


def channel_scores(z: np.ndarray, scales: list[int], spread: dict[int, np.ndarray], mask_z: float,
                   page: PageTest | None = None) -> np.ndarray:
    """(m, W, C) z windows -> (m, C) channel scores: the largest over the scales of
    ``(mean_k / spread_k) ** 2 * counted / k`` (k = 1: ``z ** 2``); a scale with fewer than half its
    readings counted does not score. Fewer readings make a noisier mean; weighting by the share
    counted keeps its null spread about the same. With ``page``, the Page statistic divided by
    its ``norm`` is one more term."""
    means = scale_means(z, scales, mask_z)
    out = np.zeros(z.shape[0:1] + z.shape[2:])
    for k in scales:
        mean, cnt = means[k]
        if k == 1:
            c = np.where(np.isfinite(mean), mean ** 2, 0.0)
        else:
            c = np.where(cnt >= k / 2, (mean / spread[k]) ** 2 * cnt / k, 0.0)
        out = np.maximum(out, c)
    if page is not None:
        out = np.maximum(out, page_cusum(z, page.steps, page.k, mask_z, page.sides) / page.norm)
    return out


def sliding(z: np.ndarray, length: int) -> np.ndarray:
    """(n, C) rows in time order -> (n - length + 1, length, C) windows (a view)."""
    from numpy.lib.stride_tricks import sliding_window_view
    return np.moveaxis(sliding_window_view(z, length, axis=0), -1, 1)


@dataclass
class ResidualDetector:
    """A fitted residual bundle's model: one :class:`LinearResidual` per group.

    Groups are ``"*"`` (features mode: every sensor, standardised by the bundle's scaler) or the
    zone names (zone mode: channels = the zone's members, in layout order).
    """

    mode: str                                   # "features" | "zone"
    channels: dict[str, list[str]]              # group -> channel names
    groups: dict[str, LinearResidual]
    scales: list[int]
    spread: dict[str, dict[int, np.ndarray]]    # group -> {k: (C,) spread of the k-mean}
    mask_z: float = 3.0
    exclude_z: float = 5.0
    calendar: bool = False
    stuck_limit: dict[str, np.ndarray] = field(default_factory=dict)   # group -> (C,) run lengths
    drift: dict | None = None                   # DriftAdapter.to_dict() of a fresh tracker (features mode)
    cusum_k: float = 0.0                        # zone mode: the Page term's reference (0 = no Page term)
    cusum_steps: int = 0
    cusum_sides: str = "both"
    cusum_norm: dict[str, np.ndarray] = field(default_factory=dict)   # group -> (C,)

    # -- scoring ------------------------------------------------------------------------------
    def group_of(self, key: str) -> str:
        if self.mode == "features":
            return "*"
        if key not in self.groups:
            raise ValueError(f"zone {key!r} is not in the residual bundle (it has {', '.join(sorted(self.groups))}): "
                             f"re-train with the current sensor registry")
        return key

    def z_windows(self, group: str, values: np.ndarray, window_times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(m, W, C) standardised inputs of one group (features mode: already scaled by the
        bundle's scaler; zone mode: member readings in units) -> ``(z, predicted)`` (m, W, C),
        ``predicted`` in the group's input units."""
        lin = self.groups[group]
        m, w, c = values.shape
        cal = calendar_columns(window_times).reshape(m * w, -1) if self.calendar else None
        a = lin.inputs(values.reshape(m * w, c), cal)
        z, pred = lin.predict(a, self.exclude_z)
        return z.reshape(m, w, c), (pred * lin.sd + lin.mean).reshape(m, w, c)

    def page(self, group: str) -> PageTest | None:
        """The group's Page term, or None when the bundle has none."""
        if not self.cusum_k or group not in self.cusum_norm:
            return None
        return PageTest(self.cusum_k, self.cusum_steps, self.cusum_sides, self.cusum_norm[group])

    def new_drift(self) -> DriftAdapter | None:
        """A tracker at the state training ended in (None when the bundle tracks no channel)."""
        if not self.drift:
            return None
        n = len(self.channels["*"])
        return DriftAdapter.from_dict(self.drift, n)

    def to_json(self) -> str:
        return json.dumps({
            "mode": self.mode, "channels": self.channels, "scales": self.scales, "mask_z": self.mask_z,
            "exclude_z": self.exclude_z, "calendar": self.calendar,
            "groups": {g: m.to_dict() for g, m in self.groups.items()},
            "spread": {g: {str(k): v.tolist() for k, v in s.items()} for g, s in self.spread.items()},
            "stuck_limit": {g: v.tolist() for g, v in self.stuck_limit.items()},
            "drift": self.drift, "cusum": {"k": self.cusum_k, "steps": self.cusum_steps, "sides": self.cusum_sides,
                                           "norm": {g: v.tolist() for g, v in self.cusum_norm.items()}}},
            indent=1)

    @classmethod
    def from_json(cls, text: str) -> "ResidualDetector":
        d = json.loads(text)
        cu = d.get("cusum") or {}       # bundles from before the Page term have none
        return cls(d["mode"], {g: list(c) for g, c in d["channels"].items()},
                   {g: LinearResidual.from_dict(m) for g, m in d["groups"].items()},
                   [int(k) for k in d["scales"]],
                   {g: {int(k): np.asarray(v, dtype=np.float64) for k, v in s.items()} for g, s in d["spread"].items()},
                   float(d["mask_z"]), float(d["exclude_z"]), bool(d["calendar"]),
                   {g: np.asarray(v, dtype=np.int64) for g, v in d.get("stuck_limit", {}).items()}, d.get("drift"),
                   float(cu.get("k", 0.0)), int(cu.get("steps", 0)), str(cu.get("sides", "both")),
                   {g: np.asarray(v, dtype=np.float64) for g, v in cu.get("norm", {}).items()})


# -- scoring a bundle -----------------------------------------------------------------------------

@dataclass
class Scored:
    """What :func:`score` returns (r = scored rows: windows, or windows x members in zone mode)."""

    scores: np.ndarray        # (r,)
    window: np.ndarray        # (r,) window index of each row
    sensor: np.ndarray        # (r,) sensor id of each row
    values: np.ndarray        # (r, W, F) the row's raw series (zone mode: the member's, F = 1)
    expected: np.ndarray      # (r, W, F) predictions in units
    sq_errors: np.ndarray     # (r, W, F) z ** 2 (what the score saw, per step and feature)
    scale: np.ndarray         # (r, F) the sensor's spread in units (explain's floor)
    stuck: np.ndarray         # (r,) bool: the stuck rule fired


def scored_rows(bundle, sensor_ids: np.ndarray, m: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(window index, sensor id) of every score :func:`score` returns for ``sensor_ids`` (zones in
    zone mode): one per window (features mode), one per window and member, window-major (zone mode)."""
    det: ResidualDetector = bundle.model
    ids = np.asarray(sensor_ids).astype(object)
    if det.mode == "features":
        return np.arange(ids.size), ids
    win, sen = [], []
    for i, z in enumerate(ids.tolist()):
        members = det.channels[det.group_of(str(z))]
        win.extend([i] * len(members))
        sen.extend(members)
    return np.asarray(win, dtype=np.int64), np.asarray(sen, dtype=object)


def score(bundle, windows: np.ndarray, window_times: np.ndarray, sensor_ids: np.ndarray,
          drift: DriftAdapter | None = None, calibrating: bool = False) -> Scored:
    """Score raw windows of a residual bundle (see the module docstring).

    Args:
        windows: (m, W, F) raw windows of the given sensors (features mode), or (m, W, S) zone
            windows (zone mode: ``sensor_ids`` are the zones; every zone of one call must have S
            members; call once per zone size otherwise).
        window_times: (m, W) ns.
        sensor_ids: (m,) sensors (features mode) or zones (zone mode).
        drift: features mode with drift tracking: the tracker to apply and update, rows in
            event-time order per sensor (``batch.score_table`` passes one through a whole table). If
            not given, a tracker at the end-of-training state is used for this call only.
        calibrating: no threshold yet: no stuck rule, no drift tracking.
    """
    det: ResidualDetector = bundle.model
    w = np.asarray(windows, dtype=np.float64)
    wt = np.asarray(window_times, dtype=np.int64).reshape(w.shape[0], w.shape[1])
    ids = np.asarray(sensor_ids).astype(object)
    m = w.shape[0]
    if det.mode == "features":
        f = w.shape[2]
        if m == 0:
            e = np.empty((0, w.shape[1], f))
            return Scored(np.empty(0), np.empty(0, np.int64), ids, e, e, e, np.empty((0, f)), np.empty(0, bool))
        mean, std = bundle.scaler.params(ids)
        u = (w - mean[:, None, :]) / std[:, None, :]
        z, pred = det.z_windows("*", u, wt)
        expected = pred * std[:, None, :] + mean[:, None, :]
        spread = det.spread["*"]
        stuck = (rules.stuck(w, det.stuck_limit["*"]) if "*" in det.stuck_limit and not calibrating
                 else np.zeros((m, f), dtype=bool))
        tracker = None if calibrating else (drift if drift is not None else det.new_drift())
        if tracker is not None:
            scores = _score_with_drift(bundle, det, z, ids, stuck, tracker, spread)
        else:
            scores = channel_scores(z, det.scales, spread, det.mask_z).mean(axis=1)
        any_stuck = stuck.any(axis=1)
        if any_stuck.any() and bundle.threshold is not None:
            thr = bundle.threshold.for_sensors(ids)
            scores = np.where(any_stuck, np.maximum(scores, STUCK_SEVERITY * thr), scores)
        return Scored(scores, np.arange(m), ids, w, expected, z ** 2, std, any_stuck)
    # zone mode: every member of every window is a row
    if m == 0:
        e = np.empty((0, w.shape[1], 1))
        return Scored(np.empty(0), np.empty(0, np.int64), np.empty(0, object), e, e, e, np.empty((0, 1)),
                      np.empty(0, bool))
    groups = [det.group_of(str(z)) for z in ids.tolist()]
    sizes = {len(det.channels[g]) for g in groups}
    if len(sizes) > 1 or w.shape[2] != sizes.pop():
        raise ValueError("zone windows of one call must all have their zone's number of members: "
                         "score each zone size apart")
    s_n = w.shape[2]
    z = np.empty_like(w)
    pred = np.empty_like(w)
    for g in sorted(set(groups)):
        rows = np.array([i for i, x in enumerate(groups) if x == g])
        z[rows], pred[rows] = det.z_windows(g, w[rows], wt[rows])
    c = np.empty((m, s_n))
    stuck = np.zeros((m, s_n), dtype=bool)
    for g in sorted(set(groups)):
        rows = np.array([i for i, x in enumerate(groups) if x == g])
        c[rows] = channel_scores(z[rows], det.scales, det.spread[g], det.mask_z, det.page(g))
        if g in det.stuck_limit and not calibrating:
            stuck[rows] = rules.stuck(w[rows], det.stuck_limit[g])
    win, sen = scored_rows(bundle, ids)
    scores = c.reshape(-1)
    stuck = stuck.reshape(-1)
    if stuck.any() and bundle.threshold is not None:
        thr = bundle.threshold.for_sensors(sen)
        scores = np.where(stuck, np.maximum(scores, STUCK_SEVERITY * thr), scores)
    # one row per member: its own series, expected series and z**2
    values = np.moveaxis(w, 2, 1).reshape(m * s_n, w.shape[1], 1)
    expected = np.moveaxis(pred, 2, 1).reshape(m * s_n, w.shape[1], 1)
    sq = np.moveaxis(z ** 2, 2, 1).reshape(m * s_n, w.shape[1], 1)
    sd = np.concatenate([det.groups[g].sd for g in groups]).reshape(m * s_n, 1)
    return Scored(scores, win, sen, values, expected, sq, sd, stuck)


def _score_with_drift(bundle, det: ResidualDetector, z: np.ndarray, ids: np.ndarray, stuck: np.ndarray,
                      tracker: DriftAdapter, spread) -> np.ndarray:
    """Window scores with the drift tracker's offsets taken off z, row by row in the given order
    (the tracker is sequential per sensor); updates ``tracker`` and ``z`` in place."""
    thr = bundle.threshold.for_sensors(ids) if bundle.threshold is not None else np.full(len(ids), np.inf)
    out = np.empty(z.shape[0])
    for i in range(z.shape[0]):
        sid = str(ids[i])
        z[i] -= tracker.offset(sid)[None, :]
        s = float(channel_scores(z[i:i + 1], det.scales, spread, det.mask_z).mean())
        alarm = s > thr[i] or bool(stuck[i].any())
        tracker.update(sid, z[i, -1], s, float(thr[i]), alarm=alarm, implicated=stuck[i])
        out[i] = s
    return out


# -- fitting --------------------------------------------------------------------------------------

@dataclass
class Fitted:
    """:func:`fit`'s result: the detector and its calibration scores (sensor of each)."""

    detector: ResidualDetector
    cal_scores: np.ndarray
    cal_sensors: np.ndarray
    info: dict


def fit_group(x: np.ndarray, times: np.ndarray, cal_on: bool, settings,
              decoupled: np.ndarray | None) -> tuple[LinearResidual, np.ndarray]:
    """Fit one group on (n, C) complete rows in time order: ``(model, out-of-fold z)``."""
    r = settings.residual
    cal = calendar_columns(times) if cal_on else None
    return crossfit(x, cal, r.folds, r.ridge, decoupled, r.exclude_z)


def calibration_scores(z: np.ndarray, scales: list[int], spread: dict, mask_z: float, length: int,
                       page: PageTest | None = None) -> np.ndarray:
    """Out-of-fold z (n, C) in time order -> (n - length + 1, C) channel scores of its windows
    (:func:`channel_scores`, in chunks)."""
    if len(z) < length:
        return np.empty((0, z.shape[1]))
    view = sliding(z, length)
    out = [channel_scores(np.ascontiguousarray(view[a:a + 2048]), scales, spread, mask_z, page)
           for a in range(0, view.shape[0], 2048)]
    return np.concatenate(out)


PAGE_MATCH_Q = 0.995          # the Page term's calibration quantile is put on the fixed scales' one


def page_norm(z: np.ndarray, segments: list[np.ndarray], scales: list[int], spread: dict, mask_z: float,
              length: int, steps: int, k: float, sides: str, q: float = PAGE_MATCH_Q) -> np.ndarray:
    """(C,) per member: the ``q`` quantile of the Page statistic over the out-of-fold z's
    calibration windows divided by that of the fixed scales' scores (:func:`channel_scores`), so
    that the Page term and the fixed scales alarm about equally often on normal data and the
    threshold (calibrated on their largest) stays at its risk."""
    fixed, stat = [], []
    for seg in segments:
        if seg.size < length:
            continue
        view = sliding(z[seg], length)
        for a in range(0, view.shape[0], 2048):
            w = np.ascontiguousarray(view[a:a + 2048])
            fixed.append(channel_scores(w, scales, spread, mask_z))
            stat.append(page_cusum(w, steps, k, mask_z, sides))
    if not fixed:
        return np.ones(z.shape[1])
    qf = np.quantile(np.concatenate(fixed), q, axis=0)
    qs = np.quantile(np.concatenate(stat), q, axis=0)
    return np.maximum(qs, 1e-6) / np.maximum(qf, 1e-6)


def scales_for(settings, mode: str) -> list[int]:
    """``residual.scales``, or for ``[]`` the mode's measured default (``AUTO_SCALES``)."""
    return [int(k) for k in settings.residual.scales] or list(AUTO_SCALES[mode])


def window_length(scales: list[int], stuck_limit: int = 0) -> int:
    """A residual bundle's window: its longest scale, and long enough for the stuck rule and for
    explanations to see the usual step change (at least 8)."""
    return int(max(max(scales), stuck_limit, 8))


def use_calendar(settings, span_ns: int) -> bool:
    c = settings.residual.calendar
    return c == "on" or (c == "auto" and span_ns >= CALENDAR_MIN_DAYS * NS_PER_DAY)


def drift_params(lin: LinearResidual, z_train: np.ndarray, settings) -> dict | None:
    """The tracker (DriftAdapter.to_dict()) for the channels ``residual.adapt`` names, or None."""
    mode = settings.residual.adapt
    c = lin.n_channels
    on = {"trend": lin.decoupled, "all": np.ones(c, dtype=bool), "none": np.zeros(c, dtype=bool)}[mode]
    if not on.any():
        return None
    level, slope = residual_trend(z_train)
    tracker = DriftAdapter(c, gain=np.where(on, 0.02, 0.0), slope_gain=np.where(on, 1e-4, 0.0),
                           max_slope=np.where(on, np.maximum(2 * np.abs(slope), 0.002), 0.0), freeze="sensor",
                           channel_limit=3.0, init_level=np.where(on, level, 0.0), init_slope=np.where(on, slope, 0.0))
    return tracker.to_dict()


STUCK_QUANTILE = 0.999        # the stuck limit: from this quantile of training run lengths (rules.stuck_limit)


def _segments(times: np.ndarray, keys: np.ndarray, max_gap_ns: int) -> list[np.ndarray]:
    """Index runs of rows (sorted by key, then time) with the same key and no gap over max_gap_ns."""
    n = len(times)
    if n == 0:
        return []
    brk = np.ones(n, dtype=bool)
    brk[1:] = (keys[1:] != keys[:-1]) | (np.diff(times) > max_gap_ns)
    starts = np.nonzero(brk)[0]
    return [np.arange(a, b) for a, b in zip(starts, list(starts[1:]) + [n])]


def zone_layout(sensors: list[str], settings, registry=None) -> dict[str, list[str]]:
    """zone -> sorted member ids. ``residual.zones = "network"``: one zone of every sensor;
    ``"registry"``: the registry's zones (sensors without one form ``unzoned``); a zone of one
    sensor cannot predict it from the others, so single-sensor zones join the largest zone."""
    sensors = sorted(str(s) for s in sensors)
    if settings.residual.zones == "network":
        return {"network": sensors}
    if registry is None or len(registry) == 0:
        from sentinel.config import ConfigError
        raise ConfigError("residual.zones = \"registry\" needs the sensor registry: set sinks.sensors_file "
                          "(sensor_id, latitude, longitude, zone, type) or use residual.zones = \"network\"")
    zone = {str(r["sensor_id"]): (str(r["zone"]) if r.get("zone") is not None and str(r["zone"]).strip() and
                                  str(r["zone"]) != "nan" else "unzoned")
            for r in registry.to_dict("records")}
    zones: dict[str, list[str]] = {}
    for s in sensors:
        zones.setdefault(zone.get(s, "unzoned"), []).append(s)
    singles = [z for z, m in zones.items() if len(m) < 2]
    if len(singles) < len(zones):
        big = max((z for z in zones if z not in singles), key=lambda z: (len(zones[z]), z))
        for z in singles:
            zones[big] = sorted(zones[big] + zones.pop(z))
    elif len(zones) > 1:   # every zone has one sensor: one zone of all
        return {"network": sensors}
    return dict(sorted(zones.items()))


def fit(frame, settings, label_col: str | None, interval_ns: int, max_gap_ns: int, registry=None) -> Fitted:
    """Fit a residual detector on clean readings (``sensor_id``, ``event_time`` + features).

    Features mode when there are two or more features, zone mode for one feature and two or
    more sensors. Labelled rows (zone mode: time steps with a labelled reading) are left out.

    Raises:
        TrainingDataError: fewer than two channels, or too few complete time steps; the sentence
            says what is needed.
    """
    import pandas as pd

    from sentinel.detect.schedule import TrainingDataError
    from sentinel.detect.windows import Scaler
    feats = list(settings.data.features)
    r = settings.residual
    df = frame
    lab = (df[label_col].fillna(0).astype(bool).to_numpy() if label_col and label_col in df
           else np.zeros(len(df), dtype=bool))
    t_all = pd.to_datetime(df["event_time"], utc=True).astype("int64").to_numpy()
    sid_all = df["sensor_id"].astype(str).to_numpy()
    span = int(t_all.max() - t_all.min()) if len(t_all) else 0
    cal_on = use_calendar(settings, span)
    if len(feats) >= 2:
        keep = ~lab
        x_raw, t, sid = df[feats].to_numpy(dtype=np.float64)[keep], t_all[keep], sid_all[keep]
        order = np.lexsort((t, sid))
        x_raw, t, sid = x_raw[order], t[order], sid[order]
        scaler = Scaler.fit(feats, sid, x_raw)
        mean, std = scaler.params(sid)
        u = (x_raw - mean) / std
        limit = rules.stuck_limit(x_raw, groups=sid, quantile=STUCK_QUANTILE)
        votes = [trend_dominated(u[sid == s], r.trend_r2) for s in np.unique(sid)]
        decoupled = np.mean(votes, axis=0) >= 0.5 if votes else np.zeros(len(feats), dtype=bool)
        tord = np.lexsort((sid, t))          # global time order: folds are time blocks of every sensor
        if len(tord) < MIN_ROWS:
            raise TrainingDataError(f"too little normal history for the residual detector: {len(tord)} readings "
                                    f"(need at least {MIN_ROWS}): give more history")
        inv = np.empty_like(tord)
        inv[tord] = np.arange(len(tord))
        scales = scales_for(settings, "features")
        lin, z_t = fit_group(u[tord], t[tord], cal_on, settings, decoupled)
        z = z_t[inv]                          # back to (sensor, time) order
        spread = _spread(z, _segments(t, sid, max_gap_ns), scales, r.mask_z)
        length = window_length(scales, int(limit.max()))
        scores, sensors = [], []
        for seg in _segments(t, sid, max_gap_ns):
            c = calibration_scores(z[seg], scales, spread, r.mask_z, length)
            scores.append(c.mean(axis=1))
            sensors.append(np.full(len(c), sid[seg[0]], dtype=object))
        big = max(np.unique(sid), key=lambda s: ((sid == s).sum(), s))
        z_in, _ = lin.predict(lin.inputs(u[sid == big], calendar_columns(t[sid == big]) if cal_on else None), 0.0)
        det = ResidualDetector("features", {"*": feats}, {"*": lin}, scales, {"*": spread},
                               r.mask_z, r.exclude_z, cal_on, {"*": limit}, drift_params(lin, z_in, settings))
        info = {"mode": "features", "channels": feats, "rows": int(len(u)), "window_length": length,
                "decoupled": [f for f, d in zip(feats, decoupled) if d], "calendar": cal_on,
                "stuck_limit": {f: int(v) for f, v in zip(feats, limit)}, "drift": bool(det.drift)}
        return Fitted(det, np.concatenate(scores) if scores else np.empty(0),
                      np.concatenate(sensors) if sensors else np.empty(0, object), info | {"scaler": scaler})
    sensors_all = sorted(set(sid_all.tolist()))
    if len(sensors_all) < 2:
        raise TrainingDataError("the residual detector needs at least two channels (features of a sensor, or "
                                f"sensors of a network), the history has one feature ({feats[0]}) of one sensor: "
                                "use model.kind = \"autoencoder\" or add sensors")
    from sentinel.detect.align import ALIGNED, WARMUP, ZoneLayout, align
    zones = zone_layout(sensors_all, settings, registry)
    vals = df[feats[0]].to_numpy(dtype=np.float64)
    al = align(sid_all, t_all, vals, None, ZoneLayout(zones), interval_ns, 2, 1, max_gap_ns, flush=True)
    bad_rows: dict[str, set] = {}
    hit = lab & np.isin(al.status, [ALIGNED, WARMUP]) & (al.row >= 0)
    for i in np.nonzero(hit)[0]:
        bad_rows.setdefault(al.zone[i], set()).add(int(al.row[i]))
    groups, spreads, limits, scores, cal_sensors, info_z = {}, {}, {}, [], [], {}
    means, fitted = {}, {}
    scales = scales_for(settings, "zone")
    page_steps = int(r.cusum_steps or max(scales)) if r.cusum_k else 0
    length = window_length(scales + [page_steps], rules.FLOOR)
    for zname, members in zones.items():
        zw = al.zones.get(zname)
        if zw is None:
            raise TrainingDataError(f"zone {zname} has no complete time step in the history: check its sensors' "
                                    f"timestamps share one sampling grid (window.interval_s)")
        ok = zw.real.all(axis=1)
        if zname in bad_rows:
            ok[list(bad_rows[zname])] = False
        x = zw.windows[ok, 0, :]
        t = zw.window_times[ok, 0]
        if len(x) < MIN_ROWS:
            raise TrainingDataError(f"zone {zname}: {len(x)} complete normal time steps, need at least {MIN_ROWS}: "
                                    f"give more history (or check that its sensors report on one time grid)")
        for j, mname in enumerate(members):
            means[mname] = float(x[:, j].mean())
        dec = trend_dominated(x, r.trend_r2)
        segs = _segments(t, np.zeros(len(t), dtype=np.int64), max_gap_ns)
        lin, z = fit_group(x, t, cal_on, settings, dec)
        limit = rules.stuck_limit(x, quantile=STUCK_QUANTILE)
        length = max(length, window_length(scales + [page_steps], int(limit.max())))
        groups[zname], spreads[zname], limits[zname] = lin, _spread(z, segs, scales, r.mask_z), limit
        fitted[zname] = (z, segs)
        info_z[zname] = {"members": members, "rows": int(len(x)), "decoupled": [m for m, d in zip(members, dec) if d],
                         "residual_sd_units": [float(v) for v in lin.scale * lin.sd]}
    norms: dict[str, np.ndarray] = {}
    for zname, members in zones.items():   # calibration scores with the bundle's window length
        z, segs = fitted[zname]
        page = None
        if page_steps:
            norms[zname] = page_norm(z, segs, scales, spreads[zname], r.mask_z, length, page_steps, r.cusum_k,
                                     r.cusum_sides)
            page = PageTest(r.cusum_k, page_steps, r.cusum_sides, norms[zname])
        for seg in segs:
            c = calibration_scores(z[seg], scales, spreads[zname], r.mask_z, length, page)
            scores.append(c.reshape(-1))
            cal_sensors.append(np.tile(np.asarray(members, dtype=object), len(c)))
    det = ResidualDetector("zone", {z: list(m) for z, m in zones.items()}, groups, scales,
                           spreads, r.mask_z, r.exclude_z, cal_on, limits, None,
                           float(r.cusum_k) if page_steps else 0.0, page_steps, r.cusum_sides, norms)
    scaler = Scaler([feats[0]], np.array([np.mean(list(means.values()))]), np.array([1.0]),
                    {m: (np.array([means[m]]), np.array([float(groups[z].sd[j])]))
                     for z, mem in zones.items() for j, m in enumerate(mem)})
    info = {"mode": "zone", "zones": info_z, "window_length": length, "calendar": cal_on, "means": means,
            "stuck_limit": {m: int(limits[z][j]) for z, mem in zones.items() for j, m in enumerate(mem)},
            "scaler": scaler}
    return Fitted(det, np.concatenate(scores) if scores else np.empty(0),
                  np.concatenate(cal_sensors) if cal_sensors else np.empty(0, object), info)


def _spread(z: np.ndarray, segments: list[np.ndarray], scales, mask_z: float) -> dict[int, np.ndarray]:
    spread = {}
    for k in scales:
        k = int(k)
        if k == 1:
            spread[k] = np.ones(z.shape[1])
            continue
        parts = []
        for seg in segments:
            if seg.size >= k:
                mean, cnt = scale_means(sliding(z[seg], k), [k], mask_z)[k]
                parts.append(np.where(cnt >= k / 2, mean, np.nan))
        spread[k] = (np.maximum(np.nanstd(np.concatenate(parts), axis=0), 1e-6) if parts
                     else np.ones(z.shape[1]) / np.sqrt(k))
    return spread
