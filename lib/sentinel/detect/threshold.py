"""Alarm thresholds calibrated on held-out normal windows' scores.

Methods (``[threshold] method``):

* ``mean_std``  - mean + k * std of the validation scores (the older dashboard's rule, k=3);
* ``quantile``  - the q-quantile of validation scores, times ``margin``;
* ``per_sensor`` - the quantile rule per sensor (sensors with fewer than
  ``MIN_SENSOR_WINDOWS`` validation windows, or unseen ones, use the global value).

Pure numpy; the calibrated threshold is saved as ``threshold.json`` in the bundle.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

MIN_SENSOR_WINDOWS = 200


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
              k: float = 4.0, quantile: float = 0.999, margin: float = 1.0) -> Threshold:
    """Fit a threshold on scores of normal validation windows.

    Args:
        scores: (m,) scores of windows known to be normal.
        sensor_ids: (m,) sensor of each score; needed for ``per_sensor``.
        method: ``mean_std``, ``quantile`` or ``per_sensor``.
        k: multiplier of the standard deviation for ``mean_std``.
        quantile: quantile for ``quantile`` and ``per_sensor``.
        margin: multiplier applied to quantile thresholds (1.0 = none).
    """
    scores = np.asarray(scores, dtype=np.float64)
    scores = scores[np.isfinite(scores)]
    if scores.size == 0:
        raise ValueError("no validation scores to calibrate a threshold on: give more normal history")
    if method == "mean_std":
        value = float(scores.mean() + k * scores.std())
        return Threshold(method, value, {"k": k, "mean": float(scores.mean()), "std": float(scores.std())})
    value = float(np.quantile(scores, quantile) * margin)
    params = {"quantile": quantile, "margin": margin, "n": int(scores.size)}
    if method == "quantile":
        return Threshold(method, value, params)
    if method == "per_sensor":
        if sensor_ids is None:
            raise ValueError("per_sensor thresholds need the sensor id of every validation score")
        ids = np.asarray(sensor_ids).astype(str)
        per = {}
        for sid in np.unique(ids):
            s = scores[ids == sid] if ids.size == scores.size else np.empty(0)
            if s.size >= MIN_SENSOR_WINDOWS:
                per[str(sid)] = float(np.quantile(s, quantile) * margin)
        return Threshold(method, value, params | {"min_windows": MIN_SENSOR_WINDOWS}, per)
    raise ValueError(f"unknown threshold method {method!r}: use mean_std, quantile or per_sensor")
