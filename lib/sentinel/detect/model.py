"""Autoencoder builders and the model bundle (save, load, resolve versions).

A bundle is a directory ``models/<name>/<version>/`` holding ``model.keras``,
``scaler.json``, ``threshold.json`` and ``manifest.json``, plus ``error_model.json`` when the
window score is the Mahalanobis distance (``threshold.reduce = "mahalanobis"``). Deploy takes a bundle path or a
``models/<name>`` folder (a *registry*, local or ``s3://``), meaning the version its pointer file
``promoted`` names, or its newest version when there is no pointer.

The pointer (:data:`POINTER`) is one small JSON object, ``{"version": "<folder name>", ...}``
(further keys are metadata: ``promoted_at``, ``promoted_by``, ``previous``, ``reason``); a file
holding just a version name is accepted too. Writers replace it atomically (local: temporary
file + ``os.replace``; S3: one PUT), so a reader sees the old or the new pointer, never a mix.
:func:`read_pointer` reads it, :func:`pin_bundle` resolves a reference to one version, and
:func:`check_compatible` says whether a running job may switch to another bundle.

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

BUNDLE_FILES = ("model.keras", "scaler.json", "threshold.json", "manifest.json")  # required (autoencoder)
RESIDUAL_FILES = ("residual.json", "scaler.json", "threshold.json", "manifest.json")  # required (residual)
_VERSION_RE = re.compile(r"^\d{8}T\d{6}(\d{6})?Z$")
POINTER = "promoted"  # in a registry folder: the version the deploy job serves
# A version is a folder name: no separators, no "..", nothing hidden (staging folders start with ".").
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class BundleError(FileNotFoundError):
    """The model bundle is missing or incomplete; the message says what to run."""


def bundle_kind(manifest: dict) -> str:
    """``autoencoder`` (bundles from before kinds were recorded too) or ``residual``."""
    return str(manifest.get("model", {}).get("kind", "autoencoder"))


def required_files(manifest: dict) -> tuple[str, ...]:
    """The files a complete bundle of this manifest's kind holds (``error_model.json`` too when it
    scores with the Mahalanobis distance)."""
    files = RESIDUAL_FILES if bundle_kind(manifest) == "residual" else BUNDLE_FILES
    if manifest.get("score", {}).get("reduce") == "mahalanobis":
        files = files + (errmod.FILE_NAME,)
    return files


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

    @property
    def kind(self) -> str:
        return bundle_kind(self.manifest)

    @property
    def layout(self):
        """The zone layout of a zone-mode residual bundle (``align.ZoneLayout``), else None."""
        m = self.manifest.get("model", {})
        if m.get("kind") != "residual" or m.get("mode") != "zone":
            return None
        from sentinel.detect.align import ZoneLayout
        return ZoneLayout({z: list(v) for z, v in m["zones"].items()}, m.get("means", {}))


@dataclass
class BundleInfo:
    """A bundle's location and manifest, without its model: what the stream's driver needs
    (the scoring workers load the model itself)."""

    path: str
    manifest: dict

    @property
    def version(self) -> str:
        return self.manifest["version"]

    @property
    def features(self) -> list[str]:
        return list(self.manifest["features"])

    @property
    def length(self) -> int:
        return int(self.manifest["window"]["length"])


def new_version() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")


def is_version_name(name: str) -> bool:
    """A usable version (folder) name: letters, digits, ``.``, ``_``, ``-``; not hidden."""
    return bool(_NAME_RE.match(str(name))) and ".." not in str(name)


def parse_pointer(text: str, where: str = POINTER) -> dict:
    """Pointer file text -> ``{"version": ..., ...metadata}``.

    Accepts the JSON object the registry writes or a bare version name (a hand-written
    pointer). Raises :class:`BundleError` naming ``where`` for anything else.
    """
    t = text.strip()
    record: Any = None
    if t.startswith("{"):
        try:
            record = json.loads(t)
        except json.JSONDecodeError:
            record = None
    elif t:
        record = {"version": t}
    version = record.get("version") if isinstance(record, dict) else None
    if not isinstance(version, str) or not is_version_name(version):
        raise BundleError(f"registry pointer {where} is not a version name or a JSON object with one: rewrite it "
                          f"with `sentinel models promote VERSION`")
    return record


def pointer_text(version: str, **meta: Any) -> str:
    """The pointer file's content for ``version`` (one line of JSON; metadata keys kept)."""
    if not is_version_name(version):
        raise BundleError(f"{version!r} is not a version name: use a bundle folder's name")
    return json.dumps({"version": version, **meta}, sort_keys=True, default=str) + "\n"


def read_pointer_record(registry: str | Path) -> dict | None:
    """The registry's pointer as a dict, or None when it has none (or ``registry`` is a bundle).

    ``registry``: a ``models/<name>`` folder or an ``s3://bucket/prefix`` of versions. A
    corrupt pointer raises :class:`BundleError`.
    """
    from sentinel.store.storage import is_s3_url
    if is_s3_url(registry):
        text = _s3_read_text(str(registry), POINTER)
        where = f"{str(registry).rstrip('/')}/{POINTER}"
    else:
        p = Path(registry).expanduser()
        if (p / "manifest.json").is_file() or not (p / POINTER).is_file():
            return None
        try:
            text = (p / POINTER).read_text(encoding="utf-8")
        except FileNotFoundError:  # removed between the check and the read
            return None
        where = str(p / POINTER)
    return None if text is None else parse_pointer(text, where)


def read_pointer(registry: str | Path) -> str | None:
    """The version the registry's pointer names, or None when there is no pointer.

    One small read (a local file, or one S3 GET): cheap enough to call between micro-batches.
    """
    rec = read_pointer_record(registry)
    return None if rec is None else rec["version"]


def version_ref(registry: str | Path, version: str) -> str:
    """Where ``version`` of ``registry`` lives: an absolute local path or an ``s3://`` URL."""
    from sentinel.store.storage import is_s3_url
    if not is_version_name(version):
        raise BundleError(f"{version!r} is not a version name: use a bundle folder's name")
    if is_s3_url(registry):
        return f"{str(registry).rstrip('/')}/{version}"
    return str(Path(registry).expanduser().resolve() / version)


def local_versions(registry: str | Path) -> list[Path]:
    """Complete versions (folders holding ``manifest.json``) of a local registry, oldest name first."""
    p = Path(registry).expanduser().resolve()
    if not p.is_dir():
        return []
    return sorted(c for c in p.iterdir()
                  if c.is_dir() and not c.name.startswith(".") and (c / "manifest.json").is_file())


def pin_bundle(ref: str | Path) -> str:
    """One bundle version for a reference, without downloading it.

    A bundle (a folder or prefix holding ``manifest.json``) stays as it is; a registry folder
    means the version its pointer names, or its newest version when it has no pointer.
    Returns an absolute local path or an ``s3://`` URL; raises :class:`BundleError`.
    """
    from sentinel.store.storage import is_s3_url, newest_bundle_url
    if is_s3_url(ref):
        url = str(ref).rstrip("/")
        if _s3_read_text(url, "manifest.json") is not None:
            return url
        version = read_pointer(url)
        if version is None:
            try:
                return newest_bundle_url(url)
            except FileNotFoundError as exc:
                raise BundleError(f"{exc}: train one with `sentinel train --out {url}/VERSION`") from None
        target = version_ref(url, version)
        if _s3_read_text(target, "manifest.json") is None:
            raise BundleError(f"registry pointer {url}/{POINTER} names version {version}, which has no "
                              f"manifest.json: promote an existing version with `sentinel models promote`")
        return target
    p = Path(ref).expanduser().resolve()  # absolute: executors run in other working directories
    if (p / "manifest.json").is_file():
        return str(p)
    version = read_pointer(p) if p.is_dir() else None
    if version is not None:
        if not (p / version / "manifest.json").is_file():
            raise BundleError(f"registry pointer {p / POINTER} names version {version}, which is not a complete "
                              f"bundle in {p}: promote an existing version with `sentinel models promote`")
        return str(p / version)
    versions = local_versions(p)
    if versions:
        return str(versions[-1])
    raise BundleError(f"no model bundle at {p}: train one first with `sentinel train` "
                      f"(or `make demo`), or point stream.model / --model at a trained bundle")


def resolve_bundle(path: str | Path) -> Path:
    """A bundle directory, or a ``models/<name>`` registry folder meaning the version its
    pointer names (its newest version without a pointer); an ``s3://`` URL is resolved the same
    way and downloaded once into a local cache (``SENTINEL_BUNDLE_CACHE``)."""
    from sentinel.store.storage import fetch_bundle, is_s3_url
    pinned = pin_bundle(path)
    if is_s3_url(pinned):
        cache = os.environ.get("SENTINEL_BUNDLE_CACHE", os.path.join(tempfile.gettempdir(), "sentinel-bundles"))
        return fetch_bundle(pinned, cache)
    return Path(pinned)


def read_manifest(ref: str | Path) -> dict:
    """A bundle's ``manifest.json`` (local folder or ``s3://`` prefix) without loading the model;
    a registry reference is pinned first (:func:`pin_bundle`)."""
    from sentinel.store.storage import is_s3_url
    pinned = pin_bundle(ref)
    text = _s3_read_text(pinned, "manifest.json") if is_s3_url(pinned) else (Path(pinned) / "manifest.json").read_text()
    if text is None:
        raise BundleError(f"model bundle {pinned} has no manifest.json: re-run `sentinel train`")
    return json.loads(text)


def check_compatible(running: dict, candidate: dict, candidate_path: str | Path | None = None) -> str | None:
    """May a running deploy job switch from the ``running`` bundle to ``candidate``?

    The job's window state holds each sensor's last W-1 raw readings of the running bundle's
    features, cut at its ``max_gap_s``: a candidate with other features (names or order), another
    window length or another gap rule would be fed windows it was not trained on. Scaler,
    network, threshold and score settings may all differ (they apply at scoring).

    Args:
        running, candidate: the two bundles' manifests.
        candidate_path: the candidate's local folder, if given also checked for its files.

    Returns:
        None when the switch is safe, else one sentence saying why not and what to do.
    """
    cv, rv = candidate.get("version", "?"), running.get("version", "?")
    refuse = f"model {cv} cannot replace the running model {rv} without a restart"
    if candidate_path is not None:
        p = Path(candidate_path)
        missing = [f for f in required_files(candidate) if not (p / f).is_file()]
        if missing:
            return f"model {cv} at {p} lacks {', '.join(missing)}: re-train or re-upload it"
    try:
        rf, cf = list(running["features"]), list(candidate["features"])
        rw, cw = running["window"], candidate["window"]
        pairs = [("window length", int(rw["length"]), int(cw["length"])),
                 ("window.max_gap_s", int(rw["max_gap_s"]), int(cw["max_gap_s"]))]
    except (KeyError, TypeError, ValueError) as exc:
        return f"model {cv} has an incomplete manifest (no {exc}): re-train it"
    if rf != cf:
        return f"{refuse}: it was trained on features {cf}, the running model on {rf}"
    rz, cz = running.get("model", {}).get("zones"), candidate.get("model", {}).get("zones")
    if (rz is None) != (cz is None) or (rz is not None and rz != cz):
        return (f"{refuse}: its zones (which sensors are aligned together) differ from the running model's "
                f"(the window state is kept per zone)")
    for what, r, c in pairs:
        if r != c:
            return f"{refuse}: its {what} is {c}, the running model's {r} (the window state is cut for it)"
    return None


def _s3_read_text(url: str, name: str) -> str | None:
    """Text of object ``name`` under ``url``, or None when it does not exist."""
    from botocore.exceptions import ClientError

    from sentinel.store.storage import join_key, parse_s3_url, s3_client
    bucket, prefix = parse_s3_url(url)
    try:
        body = s3_client().get_object(Bucket=bucket, Key=join_key(prefix, name))["Body"].read()
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
            return None
        raise
    return body.decode("utf-8")


def save_bundle(out_dir: str | Path, model, scaler: Scaler, threshold: Threshold, manifest: dict,
                error_model: ErrorModel | None = None) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if bundle_kind(manifest) == "residual":
        from sentinel.detect import residual
        (out / residual.FILE_NAME).write_text(model.to_json())
    else:
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
    if not (p / "manifest.json").is_file():
        raise BundleError(f"model bundle {p} lacks manifest.json: re-run `sentinel train`")
    manifest = json.loads((p / "manifest.json").read_text())
    missing = [f for f in required_files(manifest) if f != errmod.FILE_NAME and not (p / f).is_file()]
    if missing:
        raise BundleError(f"model bundle {p} lacks {', '.join(missing)}: re-run `sentinel train`")
    if bundle_kind(manifest) == "residual":  # plain numbers: no Keras, no TensorFlow
        from sentinel.detect.residual import FILE_NAME, ResidualDetector
        return Bundle(str(p), ResidualDetector.from_json((p / FILE_NAME).read_text()),
                      Scaler.from_json((p / "scaler.json").read_text()),
                      Threshold.from_json((p / "threshold.json").read_text()), manifest, None)
    keras = keras_module(threads)
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
