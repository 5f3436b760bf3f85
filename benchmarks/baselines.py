"""Baseline detectors for benchmarks/quality.py: what a classical approach finds on the same data.

* :func:`rolling_zscore` - per sensor and feature, ``|x - mean| / sd`` of the previous W readings;
* :func:`tod_zscore` - per sensor, 5-minute slot of the day and day type (weekday/weekend): mean and
  sd over the training history, ``|z|`` of each later reading (the per-sensor time-of-day baseline);
* :class:`PcaMonitor` - PCA on the standardised channels (sensors of a network, or features of a
  rig): Hotelling's T^2 in the leading components and the squared prediction error (SPE, Q)
  outside them, with the textbook limits (T^2: F distribution; SPE: Box's g chi2(h)), and
  :func:`crossfit_pca` out-of-fold scores to calibrate them like our detector (POT).

Every baseline returns a flag per row and a severity (score over its limit) so the incident
tracker can group its alarms as it groups ours. numpy/pandas; scikit-learn and scipy for PCA.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd


def rolling_zscore(frame: pd.DataFrame, features: list[str], window: int, z: float) -> tuple[np.ndarray, np.ndarray]:
    """(flags, severity) per row: any feature's ``|x - rolling mean| / rolling sd`` of the previous
    ``window`` readings of its sensor above ``z`` (severity = the largest |z| / z)."""
    sev = np.zeros(len(frame))
    for _, g in frame.groupby("sensor_id", sort=False):
        worst = np.zeros(len(g))
        for f in features:
            x = g[f].astype(float)
            mu = x.shift(1).rolling(window, min_periods=window).mean()
            sd = x.shift(1).rolling(window, min_periods=window).std()
            zz = ((x - mu).abs() / sd.clip(lower=1e-9)).fillna(0.0).to_numpy()
            worst = np.maximum(worst, zz)
        sev[frame.index.get_indexer(g.index)] = worst / z
    return sev > 1.0, sev


def _slot_key(ts: pd.Series, interval_s: int) -> pd.DataFrame:
    t = pd.to_datetime(ts, utc=True)
    secs = t.dt.hour * 3600 + t.dt.minute * 60 + t.dt.second
    return pd.DataFrame({"slot": (secs // interval_s).to_numpy(), "wkend": (t.dt.dayofweek >= 5).astype(int).to_numpy()})


def tod_zscore(train: pd.DataFrame, test: pd.DataFrame, feature: str, z: float = 4.0, interval_s: int = 300,
               min_sd: float = 0.02) -> tuple[np.ndarray, np.ndarray]:
    """(flags, severity) per ``test`` row: |z| against its sensor's mean and sd at the same slot of
    the day and day type in ``train`` (sd floored at ``min_sd``), over ``z``."""
    tk = _slot_key(train["timestamp"], interval_s)
    stats = (pd.DataFrame({"sensor_id": train["sensor_id"].to_numpy(), "slot": tk["slot"], "wkend": tk["wkend"],
                           "x": train[feature].to_numpy(dtype=float)})
             .groupby(["sensor_id", "wkend", "slot"])["x"].agg(["mean", "std"]).reset_index())
    k = _slot_key(test["timestamp"], interval_s)
    q = pd.DataFrame({"sensor_id": test["sensor_id"].to_numpy(), "slot": k["slot"], "wkend": k["wkend"],
                      "x": test[feature].to_numpy(dtype=float)})
    m = q.merge(stats, on=["sensor_id", "wkend", "slot"], how="left")
    zz = ((m["x"] - m["mean"]).abs() / m["std"].fillna(np.inf).clip(lower=min_sd)).fillna(0.0).to_numpy()
    return zz > z, zz / z


@dataclass
class PcaMonitor:
    """PCA T^2 / SPE monitor over standardised channels (see the module docstring)."""

    var_explained: float = 0.9
    mean_: np.ndarray = field(default=None, repr=False)
    std_: np.ndarray = field(default=None, repr=False)
    pca_: object = field(default=None, repr=False)
    k_: int = 0
    n_: int = 0
    resid_eig_: np.ndarray = field(default=None, repr=False)

    def fit(self, x: np.ndarray) -> "PcaMonitor":
        from sklearn.decomposition import PCA
        x = np.asarray(x, dtype=np.float64)
        self.mean_, self.std_ = x.mean(axis=0), np.maximum(x.std(axis=0), 1e-9)
        z = (x - self.mean_) / self.std_
        full = PCA().fit(z)
        cum = np.cumsum(full.explained_variance_ratio_)
        self.k_ = int(min(np.searchsorted(cum, self.var_explained) + 1, x.shape[1] - 1))
        self.pca_ = PCA(n_components=self.k_).fit(z)
        self.resid_eig_ = full.explained_variance_[self.k_:]
        self.n_ = x.shape[0]
        return self

    def _z(self, x):
        return (np.asarray(x, dtype=np.float64) - self.mean_) / self.std_

    def t2(self, x: np.ndarray) -> np.ndarray:
        s = self.pca_.transform(self._z(x))
        return (s ** 2 / self.pca_.explained_variance_).sum(axis=1)

    def spe_parts(self, x: np.ndarray) -> np.ndarray:
        """(n, C) each channel's squared residual outside the leading components."""
        z = self._z(x)
        return (z - self.pca_.inverse_transform(self.pca_.transform(z))) ** 2

    def spe(self, x: np.ndarray) -> np.ndarray:
        return self.spe_parts(x).sum(axis=1)

    def t2_limit(self, alpha: float) -> float:
        from scipy import stats
        k, n = self.k_, self.n_
        return float(k * (n - 1) * (n + 1) / (n * (n - k)) * stats.f.ppf(1 - alpha, k, n - k))

    def spe_limit(self, alpha: float) -> float:
        from scipy import stats
        th1, th2 = float(self.resid_eig_.sum()), float((self.resid_eig_ ** 2).sum())
        g, h = th2 / th1, th1 ** 2 / th2
        return float(g * stats.chi2.ppf(1 - alpha, h))


def crossfit_pca(x: np.ndarray, k: int = 2, var_explained: float = 0.9) -> tuple[PcaMonitor, np.ndarray, np.ndarray]:
    """PCA monitor on all of ``x`` (time order) and out-of-fold (T^2, SPE) calibration scores from
    ``k`` time blocks (each scored by a monitor fitted on the others)."""
    x = np.asarray(x, dtype=np.float64)
    t2, spe = np.empty(len(x)), np.empty(len(x))
    for blk in [b for b in np.array_split(np.arange(len(x)), k) if b.size]:
        rest = np.ones(len(x), dtype=bool)
        rest[blk] = False
        m = PcaMonitor(var_explained).fit(x[rest])
        t2[blk], spe[blk] = m.t2(x[blk]), m.spe(x[blk])
    return PcaMonitor(var_explained).fit(x), t2, spe
