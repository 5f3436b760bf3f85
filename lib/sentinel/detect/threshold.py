"""Alarm thresholds calibrated on held-out normal windows' scores.

Methods (``[threshold] method``):

* ``mean_std``  - mean + k * std of the validation scores (the older dashboard's rule, k=3);
* ``quantile``  - the q-quantile of validation scores, times ``margin``;
* ``per_sensor`` - the quantile rule per sensor (sensors with fewer than
  ``MIN_SENSOR_WINDOWS`` validation windows, or unseen ones, use the global value);
* ``pot``       - peaks over threshold (extreme value theory): the score a normal window exceeds
  with probability ``risk``, extrapolated from a fit of the scores' upper tail
  (:func:`pot_threshold`); per sensor where a sensor has ``MIN_SENSOR_WINDOWS`` validation
  scores, the global fit for the others. On tens of validation windows the 0.999 quantile is
  the sample maximum (``np.quantile`` interpolates between the two largest scores) and lets
  through 4-15 times the intended false alarms; the POT fit about 1.7 times (measured on five
  score distributions, docs/detection.md).

Pure numpy; the calibrated threshold is saved as ``threshold.json`` in the bundle.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import numpy as np

MIN_SENSOR_WINDOWS = 200
METHODS = ("mean_std", "quantile", "per_sensor", "pot")

# Peaks over threshold: fewest excesses to fit a tail (the initial quantile is lowered to get
# them), fewest to estimate the GPD shape (below: the exponential tail), the shape's bounds.
MIN_PEAKS = 10
GPD_MIN_PEAKS = 200
XI_BOUNDS = (-0.5, 0.5)


@dataclass
class Threshold:
    method: str
    value: float
    params: dict = field(default_factory=dict)
    per_sensor: dict[str, float] = field(default_factory=dict)

    def for_sensors(self, sensor_ids: np.ndarray) -> np.ndarray:
        """The threshold that applies to each row's sensor."""
        if not self.per_sensor:
            return np.full(len(sensor_ids), self.value, dtype=np.float64)
        ids = np.asarray(sensor_ids).astype(str)
        uniq, inverse = np.unique(ids, return_inverse=True)
        vals = np.array([self.per_sensor.get(u, self.value) for u in uniq], dtype=np.float64)
        return vals[inverse] if ids.size else np.empty(0)

    def to_json(self) -> str:
        return json.dumps({"method": self.method, "value": self.value, "params": self.params,
                           "per_sensor": self.per_sensor}, indent=1)

    @classmethod
    def from_json(cls, text: str) -> "Threshold":
        d = json.loads(text)
        return cls(d["method"], float(d["value"]), d.get("params", {}),
                   {k: float(v) for k, v in d.get("per_sensor", {}).items()})


def calibrate(scores: np.ndarray, sensor_ids: np.ndarray | None = None, method: str = "quantile",
              k: float = 4.0, quantile: float = 0.999, margin: float = 1.0, risk: float = 1e-3,
              init_quantile: float = 0.9) -> Threshold:
    """Fit a threshold on scores of normal validation windows.

    Args:
        scores: (m,) scores of windows known to be normal.
        sensor_ids: (m,) sensor of each score; needed for ``per_sensor`` (and for per-sensor
            ``pot`` thresholds; without it ``pot`` is global).
        method: ``mean_std``, ``quantile``, ``per_sensor`` or ``pot``.
        k: multiplier of the standard deviation for ``mean_std``.
        quantile: quantile for ``quantile`` and ``per_sensor``.
        margin: multiplier applied to quantile thresholds (1.0 = none; not used by ``pot``).
        risk: ``pot``: target probability that a normal window's score exceeds the threshold.
        init_quantile: ``pot``: quantile of the scores where the tail fit starts.
    """
    scores = np.asarray(scores, dtype=np.float64)
    finite = np.isfinite(scores)
    ids = None if sensor_ids is None else np.asarray(sensor_ids).astype(str)
    if ids is not None and ids.size == scores.size:
        ids = ids[finite]
    scores = scores[finite]
    if scores.size == 0:
        raise ValueError("no validation scores to calibrate a threshold on: give more normal history")
    if method == "mean_std":
        value = float(scores.mean() + k * scores.std())
        return Threshold(method, value, {"k": k, "mean": float(scores.mean()), "std": float(scores.std())})
    if method == "pot":
        fit = pot_threshold(scores, risk, init_quantile)
        per = {}
        if ids is not None and ids.size == scores.size:
            for sid in np.unique(ids):
                s = scores[ids == sid]
                if s.size >= MIN_SENSOR_WINDOWS:
                    per[str(sid)] = pot_threshold(s, risk, init_quantile).value
        return Threshold(method, fit.value, fit.to_dict() | {"min_windows": MIN_SENSOR_WINDOWS}, per)
    value = float(np.quantile(scores, quantile) * margin)
    params = {"quantile": quantile, "margin": margin, "n": int(scores.size)}
    if method == "quantile":
        return Threshold(method, value, params)
    if method == "per_sensor":
        if sensor_ids is None:
            raise ValueError("per_sensor thresholds need the sensor id of every validation score")
        per = {}
        for sid in np.unique(ids):
            s = scores[ids == sid] if ids.size == scores.size else np.empty(0)
            if s.size >= MIN_SENSOR_WINDOWS:
                per[str(sid)] = float(np.quantile(s, quantile) * margin)
        return Threshold(method, value, params | {"min_windows": MIN_SENSOR_WINDOWS}, per)
    raise ValueError(f"unknown threshold method {method!r}: use {', '.join(METHODS)}")


# -- peaks over threshold ------------------------------------------------------------------------

@dataclass(frozen=True)
class PotFit:
    """A peaks-over-threshold fit (:func:`pot_threshold`); ``method``/``note`` say which safeguard applied."""

    value: float           # the alarm threshold
    risk: float            # target probability that a normal score exceeds it
    init_threshold: float  # t, where the tail starts
    init_quantile: float   # the quantile t was taken at (after any lowering)
    xi: float              # GPD shape (0: exponential tail)
    sigma: float           # GPD scale
    n: int                 # scores fitted
    n_peaks: int           # excesses over t
    method: str            # "gpd", "exponential" or "empirical"
    note: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def gpd_nll(y: np.ndarray, xi: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """Negative log-likelihood of excesses ``y`` (k,) under GPD(xi, sigma), broadcast over
    arrays of ``xi``/``sigma``; +inf outside the support."""
    y = np.asarray(y, dtype=np.float64)
    xi = np.asarray(xi, dtype=np.float64)[..., None]
    sigma = np.asarray(sigma, dtype=np.float64)[..., None]
    z = y / sigma
    small = np.abs(xi) < 1e-9
    arg = 1.0 + xi * z
    with np.errstate(divide="ignore", invalid="ignore"):
        log_term = np.where(small, z, (1.0 + 1.0 / np.where(small, 1.0, xi)) * np.log(np.where(arg > 0, arg, 1.0)))
    bad = (arg <= 0).any(axis=-1) | (sigma[..., 0] <= 0)
    nll = y.size * np.log(sigma[..., 0]) + log_term.sum(axis=-1)
    return np.where(bad, np.inf, nll)


def _best_sigma(y: np.ndarray, xi: np.ndarray, iters: int = 50) -> np.ndarray:
    """For each ``xi``, the sigma minimising the NLL (golden-section search on log sigma, vectorised)."""
    ymax, ymean = float(y.max()), float(y.mean())
    lo = np.log(np.maximum(np.where(xi < 0, -xi * ymax * (1 + 1e-9), 0.0), ymean * 1e-4))
    hi = np.full(xi.shape, np.log(ymean * 1e3))
    g = (np.sqrt(5) - 1) / 2
    a, b = lo, hi
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = gpd_nll(y, xi, np.exp(c)), gpd_nll(y, xi, np.exp(d))
    for _ in range(iters):
        left = fc < fd
        b = np.where(left, d, b)
        a = np.where(left, a, c)
        c, d = b - g * (b - a), a + g * (b - a)
        fc, fd = gpd_nll(y, xi, np.exp(c)), gpd_nll(y, xi, np.exp(d))
    return np.exp((a + b) / 2)


def fit_gpd(excesses: np.ndarray, xi_bounds: tuple[float, float] = XI_BOUNDS, grid: int = 41) -> tuple[float, float]:
    """Maximum-likelihood ``(xi, sigma)`` of a GPD (location 0), ``xi`` constrained to ``xi_bounds``:
    profile likelihood on a grid of ``xi`` refined by a parabola through the best grid point and
    its neighbours (matches ``scipy.stats.genpareto.fit(floc=0)``, tests/unit/test_threshold_pot.py)."""
    y = np.asarray(excesses, dtype=np.float64)
    y = y[np.isfinite(y) & (y >= 0)]
    if y.size < 2 or y.max() <= 0:
        raise ValueError("a GPD fit needs at least two positive excesses")
    xs = np.linspace(xi_bounds[0], xi_bounds[1], grid)
    nll = gpd_nll(y, xs, _best_sigma(y, xs))
    i = int(np.argmin(nll))
    xi = float(xs[i])
    if 0 < i < grid - 1 and np.isfinite(nll[i - 1:i + 2]).all():
        f0, f1, f2 = nll[i - 1], nll[i], nll[i + 1]
        den = f0 - 2 * f1 + f2
        if den > 0:
            xi = float(xs[i] + 0.5 * (xs[1] - xs[0]) * (f0 - f2) / den)
    sigma = float(_best_sigma(y, np.array([xi]))[0])
    return xi, sigma


def pot_threshold(scores: np.ndarray, risk: float = 1e-3, init_quantile: float = 0.9,
                  min_peaks: int = MIN_PEAKS, gpd_min_peaks: int = GPD_MIN_PEAKS,
                  tail: str = "auto", xi_bounds: tuple[float, float] = XI_BOUNDS) -> PotFit:
    """The score a normal window exceeds with probability ``risk``, from a peaks-over-threshold fit.

    Pick ``t`` = the ``init_quantile`` of the scores, fit a generalized Pareto distribution to the
    ``N_t`` excesses ``s - t`` of the ``n`` scores above it and extrapolate::

        z = t + sigma / xi * ((risk * n / N_t) ** -xi - 1)     (xi != 0)
        z = t - sigma * log(risk * n / N_t)                    (xi = 0: exponential tail)

    Safeguards for small samples (recorded in the fit's ``method`` and ``note``): fewer than
    ``min_peaks`` excesses lower the initial quantile to ``1 - min_peaks / n`` (not below the
    median); below ``gpd_min_peaks`` excesses the shape is not estimated (``xi = 0``; a free
    shape on 10-100 excesses let through 4-9 times the target false alarms in simulation, the
    exponential tail 1.6-1.8 times); ``risk * n >= N_t`` (the target lies inside the data)
    returns the empirical ``1 - risk`` quantile; ties at the top return the maximum.

    Args:
        scores: (n,) scores of normal windows (non-finite ones are ignored).
        risk: target false-alarm probability per window.
        init_quantile: quantile where the tail starts (0.9).
        min_peaks, gpd_min_peaks: see above.
        tail: ``auto``, ``gpd`` (always estimate xi) or ``exponential``.
        xi_bounds: constraint on the fitted shape.

    Raises:
        ValueError: fewer than ``2 * min_peaks`` finite scores (one sentence saying what to do),
            or bad arguments.
    """
    if not 0.0 < risk < 1.0:
        raise ValueError(f"threshold.risk must lie strictly between 0 and 1, got {risk}")
    if tail not in ("auto", "gpd", "exponential"):
        raise ValueError(f"unknown tail {tail!r}: use auto, gpd or exponential")
    s = np.asarray(scores, dtype=np.float64)
    s = np.sort(s[np.isfinite(s)])
    n = s.size
    if n < 2 * min_peaks:
        raise ValueError(f"{n} validation scores are too few for a peaks-over-threshold fit (need at least "
                         f"{2 * min_peaks}): give more normal history or a larger model.validation_fraction")
    note = []
    q = float(init_quantile)
    if n * (1 - q) < min_peaks:
        q = max(0.5, 1 - min_peaks / n)
        note.append(f"initial quantile lowered {init_quantile:g} -> {q:.3f} to keep {min_peaks} excesses")
    t = float(np.quantile(s, q))
    y = s[s > t] - t
    nt = int(y.size)
    if nt < 2 or y.max() <= 0:  # ties at the top: nothing to fit
        return PotFit(float(s[-1]), risk, t, q, 0.0, 0.0, n, nt, "empirical", "; ".join(note + ["degenerate tail"]))
    ratio = risk * n / nt
    if ratio >= 1.0:
        return PotFit(float(np.quantile(s, 1 - risk)), risk, t, q, 0.0, 0.0, n, nt, "empirical",
                      "; ".join(note + ["target inside the data"]))
    if tail == "gpd" or (tail == "auto" and nt >= gpd_min_peaks):
        xi, sigma = fit_gpd(y, xi_bounds)
        method = "gpd"
    else:
        xi, sigma, method = 0.0, float(y.mean()), "exponential"
        if tail == "auto":
            note.append(f"{nt} excesses < {gpd_min_peaks}: exponential tail (xi = 0)")
    z = t - sigma * np.log(ratio) if abs(xi) < 1e-9 else t + sigma / xi * (ratio ** (-xi) - 1.0)
    return PotFit(float(z), risk, t, q, float(xi), float(sigma), n, nt, method, "; ".join(note))
