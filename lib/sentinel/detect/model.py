"""Autoencoder builders and the model bundle (save, load, resolve versions).

A bundle is a directory ``models/<name>/<version>/`` holding ``model.keras``,
``scaler.json``, ``threshold.json`` and ``manifest.json``, plus ``error_model.json`` when the
window score is the Mahalanobis distance (``threshold.reduce = "mahalanobis"``). Deploy takes a bundle path or a
``models/<name>`` folder, meaning its newest version.

Keras is imported lazily so that command-line help and pure-numpy code stay fast.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any


from sentinel.detect import error_model as errmod
from sentinel.detect.error_model import ErrorModel
from sentinel.detect.threshold import Threshold
from sentinel.detect.windows import Scaler

BUNDLE_FILES = ("model.keras", "scaler.json", "threshold.json", "manifest.json")  # required
_VERSION_RE = re.compile(r"^\d{8}T\d{6}(\d{6})?Z$")


class BundleError(FileNotFoundError):
    """The model bundle is missing or incomplete; the message says what to run."""


def keras_module(threads: int | None = None):
    """Import Keras on TensorFlow, capping TensorFlow's thread pools (one Python worker per
    core: more threads per worker only fight over the cores)."""
    if threads:
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import tensorflow as tf
    if threads:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        except RuntimeError:
            pass  # already initialised in this process; the first setting stays
    import keras
    return keras


def build_autoencoder(length: int, n_features: int, n_context: int, cell: str = "gru",
                      units: int = 32, layers: int = 1, latent: int = 8,
                      learning_rate: float = 2e-3, seed: int = 42):
    """Sequence-to-sequence reconstruction autoencoder.

    Encoder: ``layers`` recurrent layers (GRU or LSTM) over the scaled window, squeezed to a
    ``latent``-wide code. Decoder: the code repeated over the window, joined with the
    calendar context of each step (so the model knows what pressure the clock predicts), then
    recurrent layers and a per-step linear read-out of the features.

    Inputs: ``values`` (W, F) and, when ``n_context`` > 0, ``context`` (W, C).
    Output: reconstructed values (W, F).
    """
    keras = keras_module()
    keras.utils.set_random_seed(seed)
    Cell = {"gru": keras.layers.GRU, "lstm": keras.layers.LSTM}[cell]
    values = keras.Input((length, n_features), name="values")
    inputs = [values]
    x = values
    if n_context:
        context = keras.Input((length, n_context), name="context")
        inputs.append(context)
        x = keras.layers.Concatenate()([values, context])
    for i in range(layers):
        x = Cell(units, return_sequences=i < layers - 1, name=f"encoder_{cell}_{i}")(x)
    code = keras.layers.Dense(latent, activation="tanh", name="code")(x)
    x = keras.layers.RepeatVector(length)(code)
    if n_context:
        x = keras.layers.Concatenate()([x, context])
    for i in range(layers):
        x = Cell(units, return_sequences=True, name=f"decoder_{cell}_{i}")(x)
    out = keras.layers.Dense(n_features, name="reconstruction")(x)
    model = keras.Model(inputs, out, name=f"{cell}_autoencoder")
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="mse")
    return model


@dataclass
class Bundle:
    """A loaded model bundle: everything scoring needs, nothing Spark-specific."""

    path: str
    model: Any
    scaler: Scaler
    threshold: Threshold
    manifest: dict
    error_model: ErrorModel | None = field(default=None)  # only for reduce = "mahalanobis"

    @property
    def version(self) -> str:
        return self.manifest["version"]

    @property
    def length(self) -> int:
        return int(self.manifest["window"]["length"])

    @property
    def features(self) -> list[str]:
        return list(self.manifest["features"])

    @property
    def calendar(self) -> bool:
        return bool(self.manifest["window"].get("calendar", False))


def new_version() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")


def resolve_bundle(path: str | Path) -> Path:
    """A bundle directory, or a ``models/<name>`` folder meaning its newest version; an
    ``s3://`` URL is downloaded once into a local cache (``SENTINEL_BUNDLE_CACHE``)."""
    from sentinel.store.storage import fetch_bundle, is_s3_url
    if is_s3_url(path):
        cache = os.environ.get("SENTINEL_BUNDLE_CACHE", os.path.join(tempfile.gettempdir(), "sentinel-bundles"))
        return fetch_bundle(str(path), cache)
    p = Path(path).expanduser().resolve()  # absolute: executors run in other working directories
    if (p / "manifest.json").is_file():
        return p
    if p.is_dir():
        versions = sorted(c for c in p.iterdir() if c.is_dir() and (c / "manifest.json").is_file())
        if versions:
            return versions[-1]
    raise BundleError(f"no model bundle at {p}: train one first with `sentinel train` "
                      f"(or `make demo`), or point stream.model / --model at a trained bundle")


def save_bundle(out_dir: str | Path, model, scaler: Scaler, threshold: Threshold, manifest: dict,
                error_model: ErrorModel | None = None) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save(out / "model.keras")
    (out / "scaler.json").write_text(scaler.to_json())
    (out / "threshold.json").write_text(threshold.to_json())
    if error_model is not None:
        (out / errmod.FILE_NAME).write_text(error_model.to_json())
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, default=str))  # last: marks it complete
    return out


@functools.lru_cache(maxsize=4)
def load_bundle(path: str, threads: int | None = None) -> Bundle:
    """Load (once per process: cached) a bundle; missing files raise :class:`BundleError`."""
    p = resolve_bundle(path)
    missing = [f for f in BUNDLE_FILES if not (p / f).is_file()]
    if missing:
        raise BundleError(f"model bundle {p} lacks {', '.join(missing)}: re-run `sentinel train`")
    keras = keras_module(threads)
    manifest = json.loads((p / "manifest.json").read_text())
    em_path = p / errmod.FILE_NAME
    error_model = ErrorModel.from_json(em_path.read_text()) if em_path.is_file() else None
    if error_model is None and manifest.get("score", {}).get("reduce") == "mahalanobis":
        raise BundleError(f"model bundle {p} scores with the Mahalanobis distance but lacks "
                          f"{errmod.FILE_NAME}: re-run `sentinel train`")
    model = keras.saving.load_model(p / "model.keras", compile=False)
    return Bundle(str(p), model, Scaler.from_json((p / "scaler.json").read_text()),
                  Threshold.from_json((p / "threshold.json").read_text()), manifest, error_model)


def fingerprint(frame) -> str:
    """Short content hash of the training data, recorded in the manifest."""
    import pandas as pd
    h = hashlib.sha256(pd.util.hash_pandas_object(frame, index=False).values.tobytes())
    return h.hexdigest()[:16]


def library_versions() -> dict[str, str]:
    import importlib.metadata as md
    out = {}
    for name in ("tensorflow-cpu", "keras", "numpy", "pandas", "pyspark", "scikit-learn"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return out
