"""Typed settings: built-in defaults < TOML file < ``--set section.key=value``.

One frozen ``Settings`` object is built at start-up and passed down; nothing else reads
configuration files or ``os.environ`` (secrets are read where they are used, by libpq and
boto3's credential chain, so they never pass through here or the logs).

Every problem stops with a :class:`ConfigError` whose message is one sentence naming the
setting and the fix.
"""
from __future__ import annotations

import dataclasses
import re
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = PROJECT_ROOT / "conf" / "sentinel.toml"


class ConfigError(ValueError):
    """A setting is missing, unknown or of the wrong type; the message says how to fix it."""


@dataclass(frozen=True)
class DataSettings:
    sensor_field: str = "sensor_id"
    time_field: str = "timestamp"
    features: tuple[str, ...] = ("pressure",)
    units: str = "mca"
    valid_min: float = -20.0
    valid_max: float = 250.0
    valid_ranges: dict[str, str] = field(default_factory=dict)
    label_field: str = "is_anomaly"
    type_field: str = "anomaly_type"
    max_line_bytes: int = 65536


@dataclass(frozen=True)
class WindowSettings:
    length: int = 32
    stride: int = 4
    interval_s: float = 300.0
    max_gap_s: float = 1800.0
    calendar: bool = True
    wait_slots: int = 2


@dataclass(frozen=True)
class ModelSettings:
    name: str = "pressure"
    dir: str = "models"
    kind: str = "auto"
    cell: str = "gru"
    units: int = 32
    layers: int = 1
    latent: int = 8
    epochs: int = 12
    batch_size: int = 256
    patience: int = 3
    learning_rate: float = 0.002
    validation_fraction: float = 0.2
    max_train_windows: int = 60000
    seed: int = 42


@dataclass(frozen=True)
class ThresholdSettings:
    method: str = "pot"
    k: float = 4.0
    quantile: float = 0.999
    margin: float = 1.1
    reduce: str = "mean"
    persistence_m: int = 1
    persistence_n: int = 1
    recent_steps: int = 4
    recent_ratio: float = 0.2
    risk: float = 1e-4
    init_quantile: float = 0.9
    stuck: bool = True


@dataclass(frozen=True)
class ResidualSettings:
    zones: str = "network"
    ridge: float = 1e-4
    calendar: str = "auto"
    scales: tuple[int, ...] = ()
    folds: int = 2
    exclude_z: float = 5.0
    mask_z: float = 3.0
    trend_r2: float = 0.8
    adapt: str = "trend"
    cusum_k: float = 1.0          # zone mode: windowed Page test per member, reference in residual sd (0 = off)
    cusum_steps: int = 0          # newest steps it runs over (0 = the longest scale)
    cusum_sides: str = "drop"     # drop: only falling residuals add up (a leak lowers pressure) | both


@dataclass(frozen=True)
class TrainSettings:
    input: str = "data/history.csv"
    format: str = "auto"
    out: str = ""
    report: bool = True


@dataclass(frozen=True)
class KafkaSettings:
    bootstrap_servers: str = "127.0.0.1:19092"
    topic: str = "sensor-events"
    subscribe_pattern: str = ""
    starting_offsets: str = "earliest"
    max_offsets_per_trigger: int = 50000
    fail_on_data_loss: bool = True
    alerts_topic: str = ""
    options: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SourceSettings:
    type: str = "socket"
    host: str = "localhost"
    port: int = 9999
    kafka: KafkaSettings = field(default_factory=KafkaSettings)


@dataclass(frozen=True)
class StreamSettings:
    model: str = "models/pressure"
    checkpoint: str = "checkpoints/deploy"
    trigger_s: float = 1.0
    late_policy: str = "reject"
    state_buckets: int = 16
    max_batches: int = 0
    idle_timeout_s: float = 0.0
    model_check_s: float = 5.0
    driver_state_dir: str = ""


@dataclass(frozen=True)
class SqliteSettings:
    path: str = "data/sentinel.db"


@dataclass(frozen=True)
class PostgresSettings:
    dsn: str = ""
    schema: str = "sentinel"
    retries: int = 5
    retry_backoff_s: float = 0.5


@dataclass(frozen=True)
class S3Settings:
    bucket: str = "sentinel"
    prefix: str = "anomalies"
    region: str = "us-east-1"
    endpoint_url: str = ""


@dataclass(frozen=True)
class SinkSettings:
    enabled: tuple[str, ...] = ("sqlite",)
    sensors_file: str = ""
    write_scores: bool = True
    scores_retention_days: int = 30
    sqlite: SqliteSettings = field(default_factory=SqliteSettings)
    postgres: PostgresSettings = field(default_factory=PostgresSettings)
    s3: S3Settings = field(default_factory=S3Settings)


# spark.jvm_gc -> the JVM flag ("" = the JVM's own choice, G1 on a server-class machine).
JVM_GC_FLAGS = {"serial": "-XX:+UseSerialGC", "parallel": "-XX:+UseParallelGC", "g1": "-XX:+UseG1GC", "default": ""}


@dataclass(frozen=True)
class SparkSettings:
    master: str = "local[*]"
    app_name: str = "pressure-sentinel"
    shuffle_partitions: int = 2
    arrow_max_records: int = 10000
    preload_tensorflow: bool = True
    state_store: str = "rocksdb"
    python_threads: int = 1
    log_level: str = "WARN"
    driver_memory: str = "768m"
    executor_memory: str = ""
    rocksdb_max_memory_mb: int = 64
    malloc_arena_max: int = 2
    jvm_gc: str = "serial"
    conf: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class LifecycleSettings:
    registry: str = ""
    store: str = ""
    window_days: float = 28.0
    holdout_days: float = 3.0
    promote: str = "manual"
    false_alarm_tolerance: float = 0.0
    recall_tolerance: float = 0.0
    min_holdout_sensor_days: float = 1.0
    incident_margin_s: int = 0
    drift_days: float = 7.0
    drift_psi: float = 0.25
    drift_near_rate: float = 0.02
    drift_share: float = 0.2
    drift_min_scores: int = 200
    schedule: str = "@weekly"


@dataclass(frozen=True)
class IncidentSettings:
    merge_gap_s: int = 9600
    quiet_s: int = 9600
    merge_distance_m: float = 500.0
    merge_onset_s: int = 1800
    open_severity: float = 1.5
    open_readings: int = 36
    alarm_budget_per_hour: float = 6.0
    flood_count: int = 10
    flood_window_s: int = 600
    chatter_per_hour: int = 3
    stale_s: int = 86400


@dataclass(frozen=True)
class Settings:
    data: DataSettings = field(default_factory=DataSettings)
    window: WindowSettings = field(default_factory=WindowSettings)
    model: ModelSettings = field(default_factory=ModelSettings)
    threshold: ThresholdSettings = field(default_factory=ThresholdSettings)
    residual: ResidualSettings = field(default_factory=ResidualSettings)
    train: TrainSettings = field(default_factory=TrainSettings)
    source: SourceSettings = field(default_factory=SourceSettings)
    stream: StreamSettings = field(default_factory=StreamSettings)
    sinks: SinkSettings = field(default_factory=SinkSettings)
    spark: SparkSettings = field(default_factory=SparkSettings)
    incidents: IncidentSettings = field(default_factory=IncidentSettings)
    lifecycle: LifecycleSettings = field(default_factory=LifecycleSettings)

    def replace(self, **overrides: Any) -> "Settings":
        """Return a copy with dotted overrides applied, e.g. ``{"window.length": 16}``."""
        return _apply(self, {k: list(v) if isinstance(v, tuple) else v for k, v in overrides.items()}, "override")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# Choices checked after types: a typo here would otherwise surface deep inside a job.
_CHOICES = {
    "model.cell": ("gru", "lstm"),
    "model.kind": ("autoencoder", "residual", "auto"),
    "threshold.method": ("mean_std", "quantile", "per_sensor", "pot"),
    "residual.zones": ("network", "registry"),
    "residual.calendar": ("auto", "on", "off"),
    "residual.adapt": ("trend", "none", "all"),
    "residual.cusum_sides": ("both", "drop"),
    "threshold.reduce": ("mean", "last", "max", "mahalanobis"),
    "source.type": ("socket", "kafka"),
    "stream.late_policy": ("reject",),
    "train.format": ("auto", "csv", "parquet", "json"),
    "spark.state_store": ("rocksdb", "hdfs"),
    "lifecycle.promote": ("auto", "manual"),
}
_SINKS = ("sqlite", "postgres", "s3")
# Settings that moved: naming the old key says where it went.
_RENAMED = {"sinks.s3.write_scores": "sinks.write_scores (it now covers every store in sinks.enabled)"}


def load_settings(path: str | Path | None = None, overrides: list[str] | None = None) -> Settings:
    """Build settings from the defaults, an optional TOML file and ``key=value`` overrides.

    Args:
        path: TOML file. If not given, only the built-in defaults (documented in
            ``conf/sentinel.toml``) are used.
        overrides: ``section.key=value`` strings; values are parsed as TOML
            (``3``, ``true``, ``["a","b"]``) and fall back to plain strings.
    """
    settings = Settings()
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist: pass an existing file to --config "
                              f"(the documented defaults are in {DEFAULT_CONFIG.relative_to(PROJECT_ROOT)})")
        try:
            raw = tomllib.loads(p.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {p} is not valid TOML ({exc}): fix the syntax at that line") from exc
        settings = _apply(settings, _flatten(raw), str(p))
    if overrides:
        settings = _apply(settings, dict(_parse_override(o) for o in overrides), "--set")
    _validate(settings)
    return settings


def _parse_override(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {text!r} is not of the form section.key=value: write it like --set window.length=64")
    try:
        parsed = tomllib.loads(f"v = {value.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value.strip()
    return key.strip(), parsed


def _flatten(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested TOML tables to dotted keys; free-form dict settings stay whole."""
    out: dict[str, Any] = {}
    for key, value in table.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and _field_type(dotted) is not dict:
            out.update(_flatten(value, dotted + "."))
        else:
            out[dotted] = value
    return out


def _field_type(dotted: str) -> Any:
    obj: Any = Settings
    for part in dotted.split("."):
        hints = typing.get_type_hints(obj) if dataclasses.is_dataclass(obj) else {}
        if part not in hints:
            return None
        obj = hints[part]
    return typing.get_origin(obj) or obj


def _known_keys(cls: Any, prefix: str = "") -> list[str]:
    keys = []
    for name, tp in typing.get_type_hints(cls).items():
        if dataclasses.is_dataclass(tp):
            keys += _known_keys(tp, f"{prefix}{name}.")
        else:
            keys.append(f"{prefix}{name}")
    return keys


def _apply(settings: Settings, flat: dict[str, Any], origin: str) -> Settings:
    known = _known_keys(Settings)
    for dotted, value in flat.items():
        if dotted in _RENAMED:
            raise ConfigError(f"setting '{dotted}' in {origin} was replaced by {_RENAMED[dotted]}: rename it")
        if dotted not in known:
            section = dotted.split(".")[0]
            close = [k for k in known if k.split(".")[0] == section] or known
            raise ConfigError(f"unknown setting '{dotted}' in {origin}: remove it or use one of "
                              f"{', '.join(close[:12])}")
        settings = _set(settings, dotted.split("."), _coerce(dotted, value, origin))
    return settings


def _set(obj: Any, parts: list[str], value: Any) -> Any:
    if len(parts) == 1:
        return dataclasses.replace(obj, **{parts[0]: value})
    return dataclasses.replace(obj, **{parts[0]: _set(getattr(obj, parts[0]), parts[1:], value)})


def _coerce(dotted: str, value: Any, origin: str) -> Any:
    parts = dotted.split(".")
    owner: Any = Settings
    for part in parts[:-1]:
        owner = typing.get_type_hints(owner)[part]
    tp = typing.get_type_hints(owner)[parts[-1]]
    origin_tp = typing.get_origin(tp) or tp

    def bad(expected: str) -> ConfigError:
        return ConfigError(f"setting '{dotted}' in {origin} must be {expected}, got {value!r}: "
                           f"fix its value")

    if origin_tp is bool:
        if isinstance(value, bool):
            return value
        raise bad("true or false")
    if origin_tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise bad("an integer")
    if origin_tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise bad("a number")
    if origin_tp is str:
        if isinstance(value, str):
            return value
        raise bad("a string (quote it)")
    if origin_tp is tuple and typing.get_args(tp)[:1] == (int,):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
            if all(v.lstrip("-").isdigit() for v in value):
                value = [int(v) for v in value]
        if isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            return tuple(value)
        raise bad("a list of integers like [1, 6, 24]")
    if origin_tp is tuple:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return tuple(value)
        raise bad('a list of strings like ["a", "b"]')
    if origin_tp is dict:
        if isinstance(value, dict):
            return {str(k): str(v).lower() if isinstance(v, bool) else str(v) for k, v in value.items()}
        raise bad("a table of key = value pairs")
    raise bad(str(tp))  # pragma: no cover - every field type is handled above


def _validate(s: Settings) -> None:
    for dotted, choices in _CHOICES.items():
        section, key = dotted.split(".")
        value = getattr(getattr(s, section), key)
        if value not in choices:
            raise ConfigError(f"setting '{dotted}' is {value!r}: use one of {', '.join(choices)}")
    for sink in s.sinks.enabled:
        if sink not in _SINKS:
            raise ConfigError(f"setting 'sinks.enabled' names unknown sink {sink!r}: use any of {', '.join(_SINKS)}")
    positive = {"window.length": s.window.length, "window.stride": s.window.stride,
                "model.units": s.model.units,
                "model.layers": s.model.layers, "model.epochs": s.model.epochs,
                "model.batch_size": s.model.batch_size, "model.latent": s.model.latent,
                "spark.arrow_max_records": s.spark.arrow_max_records}
    for dotted, value in positive.items():
        if value < 1:
            raise ConfigError(f"setting '{dotted}' is {value}: it must be at least 1")
    if s.window.wait_slots < 0:
        raise ConfigError("setting 'window.wait_slots' must not be negative (0 = no wait for late zone members)")
    if s.window.interval_s < 0 or s.window.max_gap_s < 0:
        raise ConfigError("settings 'window.interval_s' and 'window.max_gap_s' must not be negative "
                          "(0 = infer the interval from the data, and a gap of six intervals)")
    if s.window.interval_s and s.window.max_gap_s and s.window.max_gap_s < s.window.interval_s:
        raise ConfigError("setting 'window.max_gap_s' is shorter than 'window.interval_s': "
                          "set it to at least one sampling interval")
    if not 0.0 < s.threshold.risk < 1.0 or not 0.0 < s.threshold.init_quantile < 1.0:
        raise ConfigError("settings 'threshold.risk' and 'threshold.init_quantile' must lie strictly between 0 and 1")
    r = s.residual
    if r.scales and min(r.scales) < 1:
        raise ConfigError("setting 'residual.scales' must list window steps of at least 1, like [1, 6, 24] "
                          "(or [] for the measured default)")
    if r.folds < 2 or r.ridge <= 0 or r.exclude_z < 0 or r.mask_z < 0:
        raise ConfigError("settings 'residual.folds' (at least 2), 'residual.ridge' (positive), 'residual.exclude_z' "
                          "and 'residual.mask_z' (not negative; 0 = off) are out of range: fix them")
    if r.cusum_k < 0 or r.cusum_steps < 0:
        raise ConfigError("settings 'residual.cusum_k' (the Page test's reference in residual sd, 0 = no Page test) "
                          "and 'residual.cusum_steps' (steps it runs over, 0 = the longest scale) must not be "
                          "negative: fix them")
    if not s.data.features:
        raise ConfigError("setting 'data.features' is empty: list at least one numeric field")
    if not 0.0 < s.threshold.quantile < 1.0:
        raise ConfigError("setting 'threshold.quantile' must lie strictly between 0 and 1")
    if not 0.0 < s.model.validation_fraction < 1.0:
        raise ConfigError("setting 'model.validation_fraction' must lie strictly between 0 and 1")
    if s.data.valid_min >= s.data.valid_max:
        raise ConfigError("setting 'data.valid_min' must be below 'data.valid_max'")
    if not 1 <= s.threshold.persistence_m <= s.threshold.persistence_n:
        raise ConfigError("settings 'threshold.persistence_m' and '_n' need 1 <= m <= n")
    if s.threshold.recent_steps < 0:
        raise ConfigError("setting 'threshold.recent_steps' must not be negative (0 turns the rule off)")
    if s.threshold.recent_ratio < 0:
        raise ConfigError("setting 'threshold.recent_ratio' must not be negative")
    if "@" in s.sinks.postgres.dsn and ":" in s.sinks.postgres.dsn.split("@")[0].split("//")[-1]:
        raise ConfigError("setting 'sinks.postgres.dsn' contains a password: remove it and set "
                          "PGPASSWORD (or ~/.pgpass) instead")
    if s.sinks.scores_retention_days < 0:
        raise ConfigError("setting 'sinks.scores_retention_days' must not be negative (0 keeps every score)")
    if not 1 <= s.stream.state_buckets <= 1_000_000:
        raise ConfigError("setting 'stream.state_buckets' must be between 1 and 1000000")
    lc = s.lifecycle
    if not 0 < lc.holdout_days < lc.window_days:
        raise ConfigError("setting 'lifecycle.holdout_days' must be positive and below 'lifecycle.window_days'")
    if min(lc.false_alarm_tolerance, lc.recall_tolerance, lc.incident_margin_s, lc.drift_psi,
           lc.drift_near_rate, lc.drift_share, lc.drift_days) < 0:
        raise ConfigError("lifecycle tolerances, margins and drift settings must not be negative")
    if s.spark.jvm_gc not in JVM_GC_FLAGS:
        raise ConfigError(f"setting 'spark.jvm_gc' is {s.spark.jvm_gc!r}: use one of {', '.join(JVM_GC_FLAGS)}")
    for key in ("driver_memory", "executor_memory"):
        if not re.fullmatch(r"(\d+[kmgt]?)?", getattr(s.spark, key), re.I):
            raise ConfigError(f"setting 'spark.{key}' is {getattr(s.spark, key)!r}: write a JVM size like \"512m\" or \"2g\" "
                              f"(or \"\" for Spark's default)")
    if s.spark.malloc_arena_max < 0:
        raise ConfigError("setting 'spark.malloc_arena_max' is negative: use a count of arenas, or 0 for glibc's default")
    if s.spark.rocksdb_max_memory_mb < 0:
        raise ConfigError("setting 'spark.rocksdb_max_memory_mb' is negative: use a cap in MiB, or 0 for no cap")
    if s.stream.trigger_s <= 0:
        raise ConfigError("setting 'stream.trigger_s' must be positive (a zero trigger spins the CPU)")
    _validate_incidents(s.incidents)


def _validate_incidents(inc: IncidentSettings) -> None:
    """The [incidents] rules: positive times and counts, quiet time not shorter than the merge gap."""
    positive = {"merge_gap_s": inc.merge_gap_s, "flood_count": inc.flood_count,
                "flood_window_s": inc.flood_window_s, "chatter_per_hour": inc.chatter_per_hour,
                "stale_s": inc.stale_s}
    for key, value in positive.items():
        if value < 1:
            raise ConfigError(f"setting 'incidents.{key}' is {value}: it must be at least 1")
    if inc.quiet_s < inc.merge_gap_s:
        raise ConfigError("setting 'incidents.quiet_s' is shorter than 'incidents.merge_gap_s': an incident "
                          "would close before a gap could end; set it to at least the merge gap")
    for key in ("merge_distance_m", "merge_onset_s", "open_readings"):
        if getattr(inc, key) < 0:
            raise ConfigError(f"setting 'incidents.{key}' must not be negative (0 turns the rule off)")
    if inc.open_severity < 1.0:
        raise ConfigError("setting 'incidents.open_severity' is below 1: every alarm has a severity above 1, "
                          "so use 1 to open an incident on every alarm")
    if inc.alarm_budget_per_hour <= 0:
        raise ConfigError("setting 'incidents.alarm_budget_per_hour' must be positive (EEMUA 191 suggests 6)")


def redacted(settings: Settings) -> dict[str, Any]:
    """Settings as a dict safe to print: option values that look secret are masked."""
    d = settings.to_dict()
    opts = d["source"]["kafka"]["options"]
    for key in opts:
        if any(word in key.lower() for word in ("password", "secret", "sasl.jaas", "token")):
            opts[key] = "***"
    return d
