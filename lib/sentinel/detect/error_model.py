"""Error-shape model: the Mahalanobis distance of a window's per-step error vector.

The plain window score (``threshold.reduce = "mean"``) treats the W per-step reconstruction
errors of a window as interchangeable. ``"mahalanobis"`` scores the whole error vector
against how the errors of *normal* windows are spread and correlated step by step:

    score = sqrt((e - mu)^T  Sigma^-1  (e - mu))

with ``e`` the (W,) squared reconstruction errors per step (averaged over features), ``mu``
and ``Sigma`` their mean and covariance on normal validation windows. With ``mu = 0`` and
``Sigma = I`` it is the Euclidean norm of ``e``.

Fitted by ``training.fit_bundle`` on the first (older) half of the validation windows; the
threshold is then calibrated on the second half, so the threshold never sees the windows the
covariance was fitted on. Saved as ``error_model.json`` in the bundle (optional file: bundles
without it score with mean/last/max as before).

Pure numpy; scikit-learn only when fitting.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

FILE_NAME = "error_model.json"


@dataclass
class ErrorModel:
    """Mean and precision (inverse covariance) of normal windows' per-step error vectors."""

    mean: np.ndarray        # (W,)
    precision: np.ndarray   # (W, W), symmetric positive definite
    params: dict = field(default_factory=dict)

    def distance(self, errors: np.ndarray) -> np.ndarray:
        """(m, W) per-step errors -> (m,) Mahalanobis distances."""
        e = np.asarray(errors, dtype=np.float64)
        if e.ndim != 2 or e.shape[1] != self.mean.size:
            raise ValueError(f"error vectors of shape {e.shape} do not match the error model's "
                             f"{self.mean.size} steps: the bundle's error model and window length disagree")
        d = e - self.mean
        # einsum keeps it one pass over the rows; clip tiny negative round-off before sqrt.
        return np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", d, self.precision, d), 0.0))

    def to_json(self) -> str:
        return json.dumps({"method": "mahalanobis", "input": "per_step_squared_error",
                           "mean": self.mean.tolist(), "precision": self.precision.tolist(),
                           "params": self.params}, indent=1)

    @classmethod
    def from_json(cls, text: str) -> "ErrorModel":
        d = json.loads(text)
        return cls(np.asarray(d["mean"], dtype=np.float64), np.asarray(d["precision"], dtype=np.float64),
                   d.get("params", {}))


def fit_error_model(errors: np.ndarray) -> ErrorModel:
    """Fit mean and a shrunk covariance of (m, W) per-step errors of normal windows.

    Ledoit-Wolf rather than the sample covariance: neighbouring steps' errors are strongly
    correlated and validation windows overlap (stride 1), so the sample covariance of W
    dimensions is ill-conditioned and its inverse blows up noise in the smallest eigenvalues
    (tiny, meaningless error directions would dominate the distance). Ledoit-Wolf shrinks it
    towards a scaled identity by the analytically optimal amount: always invertible, no
    tuning knob, deterministic.
    """
    from sklearn.covariance import LedoitWolf

    e = np.asarray(errors, dtype=np.float64)
    e = e[np.isfinite(e).all(axis=1)]
    if e.shape[0] < 2:
        raise ValueError("too few normal windows to fit the Mahalanobis error model: give more history "
                         "or use threshold.reduce = \"mean\"")
    lw = LedoitWolf().fit(e)
    precision = np.linalg.inv(lw.covariance_)
    precision = (precision + precision.T) / 2  # exact symmetry after inversion round-off
    return ErrorModel(lw.location_.astype(np.float64), precision,
                      {"estimator": "ledoit_wolf", "shrinkage": float(lw.shrinkage_), "windows": int(e.shape[0])})
