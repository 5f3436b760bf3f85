"""docker-compose.yml, Dockerfile and conf/examples/compose.toml checked statically.

No Docker engine is needed (or available on the build machine): these tests read the files and
check that they agree with each other and with the rest of the repository -- every service is
buildable or pullable, the Spark worker can scale, addresses/topics/buckets/credentials line up
with the compose config file, referenced files exist, versions match the pins, and the
stateful services have health checks.
"""
from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

import pytest
import yaml  # PyYAML: installed with the test extra (moto[server] -> responses, cfn-lint)

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE_TOML = ROOT / "conf" / "examples" / "compose.toml"
IMAGE_ROOT = "/opt/sentinel"              # WORKDIR of the project image
PROJECT_SERVICES = ("spark-master", "spark-worker", "spark-history", "simulator")
HEALTHCHECKED = ("kafka", "postgres", "minio", "spark-master")

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}")


def interpolate(value):
    """Compose's ${VAR:-default} with an empty environment: the defaults a fresh
    `docker compose up` uses."""
    if isinstance(value, str):
        return _VAR.sub(lambda m: m.group(2) or "", value)
    if isinstance(value, list):
        return [interpolate(v) for v in value]
    if isinstance(value, dict):
        return {k: interpolate(v) for k, v in value.items()}
    return value


@pytest.fixture(scope="module")
def compose() -> dict:
    return interpolate(yaml.safe_load(COMPOSE.read_text()))


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


@pytest.fixture(scope="module")
def settings():
    from sentinel.config import load_settings
    return load_settings(COMPOSE_TOML)


@pytest.fixture(scope="module")
def dockerfile() -> str:
    return DOCKERFILE.read_text()


def env(service: dict) -> dict[str, str]:
    e = service.get("environment") or {}
    if isinstance(e, list):
        e = dict(item.split("=", 1) for item in e)
    return {k: str(v) for k, v in e.items()}


def command(service: dict) -> list[str]:
    c = service.get("command") or []
    return shlex.split(c) if isinstance(c, str) else [str(x) for x in c]


def mounts(service: dict) -> list[tuple[str, str]]:
    """(source, target) of each volume entry (short syntax)."""
    out = []
    for v in service.get("volumes") or []:
        if isinstance(v, dict):
            out.append((v["source"], v["target"]))
        else:
            src, tgt = v.split(":")[:2]
            out.append((src, tgt))
    return out


def image_tag(service: dict) -> tuple[str, str]:
    name, _, tag = service["image"].rpartition(":")
    return name, tag


def pins() -> dict[str, str]:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return dict(d.split("==") for d in deps if "==" in d)


def dockerfile_arg(text: str, name: str) -> str:
    m = re.search(rf"^ARG {name}=(\S+)", text, re.M)
    assert m, f"Dockerfile has no ARG {name}=..."
    return m.group(1)


# ---------------------------------------------------------------- structure
def test_compose_is_valid_yaml_with_services(compose):
    assert isinstance(compose, dict) and isinstance(compose.get("services"), dict)
    expected = {"spark-master", "spark-worker", "spark-history", "kafka", "postgres", "minio",
                "minio-init", "simulator"}
    assert expected <= set(compose["services"])


def test_every_service_has_image_or_build(services):
    for name, svc in services.items():
        assert "image" in svc or "build" in svc, name


def test_project_services_build_the_dockerfile(services):
    for name in PROJECT_SERVICES:
        build = services[name].get("build")
        assert build, f"{name} must build the project image"
        context = ROOT / (build if isinstance(build, str) else build.get("context", "."))
        dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
        assert (context / dockerfile).resolve() == DOCKERFILE.resolve()


def test_worker_can_scale(services):
    w = services["spark-worker"]
    assert "container_name" not in w and "hostname" not in w
    for p in w.get("ports") or []:
        # only a bare container port ("8081") may appear; a host port would clash on --scale
        assert ":" not in str(p) and not isinstance(p, dict), f"spark-worker publishes a host port: {p}"
    assert ((w.get("deploy") or {}).get("replicas", 1)) >= 1


def test_named_volumes_are_declared(compose, services):
    declared = set(compose.get("volumes") or {})
    for name, svc in services.items():
        for src, _ in mounts(svc):
            if not src.startswith((".", "/")):
                assert src in declared, f"{name} mounts undeclared volume {src}"


def test_dependencies_exist(services):
    for name, svc in services.items():
        deps = svc.get("depends_on") or {}
        for dep in deps:
            assert dep in services, f"{name} depends on unknown service {dep}"


# ---------------------------------------------------------------- files
def test_referenced_files_exist(services):
    for name, svc in services.items():
        for src, _ in mounts(svc):
            if src.startswith("."):
                assert (ROOT / src).exists(), f"{name} mounts {src}, which does not exist"
        entry = svc.get("entrypoint") or []
        entry = shlex.split(entry) if isinstance(entry, str) else entry
        for arg in entry:
            if arg.startswith("/docker/"):
                hosted = {tgt: src for src, tgt in mounts(svc)}
                assert arg in hosted, f"{name}: entrypoint {arg} is not mounted"
                assert (ROOT / hosted[arg]).is_file()


def test_dockerfile_sources_exist(dockerfile):
    for line in dockerfile.splitlines():
        parts = line.split()
        if parts and parts[0] == "COPY":
            srcs = [p for p in parts[1:-1] if not p.startswith("--")]
            for src in srcs:
                assert (ROOT / src).exists(), f"Dockerfile copies {src}, which does not exist"
    m = re.search(r'^ENTRYPOINT \["([^"]+)"', dockerfile, re.M)
    assert m and m.group(1).startswith(IMAGE_ROOT + "/")
    entry = ROOT / m.group(1)[len(IMAGE_ROOT) + 1:]
    assert entry.is_file() and entry.stat().st_mode & 0o111, f"{entry} missing or not executable"


def test_dockerignore_keeps_what_the_image_needs():
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    for needed in ("lib", "jobs", "scripts", "conf", "docker", "pyproject.toml"):
        assert needed not in ignored, needed
    for heavy in (".venv", ".cache", "data", "models", "checkpoints", ".git"):
        assert heavy in ignored, heavy


def test_entrypoint_roles_match_commands(services):
    text = (ROOT / "docker" / "entrypoint.sh").read_text()
    for name in ("spark-master", "spark-worker", "spark-history"):
        role = command(services[name])[0]
        assert re.search(rf"^\s*{role}\)", text, re.M), f"entrypoint.sh has no role {role!r} for {name}"


# ---------------------------------------------------------------- versions
def test_python_is_3_11(dockerfile):
    froms = re.findall(r"^FROM\s+(\S+)", dockerfile, re.M)
    assert froms and all(f.startswith("python:3.11") for f in froms), froms
    assert tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"] == ">=3.11,<3.12"


def test_java_17_in_image(dockerfile):
    assert "openjdk-17-jre-headless" in dockerfile
    # openjdk-17 is in Debian bookworm, not in trixie (the newer python:3.11-slim default)
    assert re.search(r"^FROM python:3\.11-slim-bookworm", dockerfile, re.M)


def test_spark_version_matches_pyproject(dockerfile, services):
    pyspark = pins()["pyspark"]
    assert dockerfile_arg(dockerfile, "SPARK_VERSION") == pyspark
    # the image installs the lock generated from pyproject's pins (not a hand-kept copy)
    assert re.search(rf"^pyspark=={re.escape(pyspark)} ", (ROOT / "requirements.lock").read_text(), re.M)
    connector = re.search(r"spark-sql-kafka-0-10_2\.13:(\S+)", (ROOT / "conf" / "spark-defaults.conf").read_text())
    assert connector and connector.group(1) == pyspark
    for name, svc in services.items():
        if "image" in svc and re.search(r"(^|/)spark(:|$)", svc["image"].split(":")[0] + ":"):
            assert image_tag(svc)[1].startswith(pyspark), f"{name}: Spark image {svc['image']} != pyspark {pyspark}"


def test_dockerfile_installs_the_hashed_lock(dockerfile):
    """The image gets exactly the locked runtime set: every file hash-checked, wheels only, the
    lock copied before it is installed, and the package added without re-resolving anything."""
    runs = " ".join(re.findall(r"^RUN .*?(?<!\\)$", re.sub(r"\\\n", " ", dockerfile), re.M | re.S))
    installs = re.findall(r"pip install ([^&]*)-r (\S+)", runs)
    assert [lock for _, lock in installs] == ["build-tools.lock", "requirements.lock"], \
        "the Dockerfile must pip install the lock's build tools, then -r the lock file"
    for flags, _ in installs:
        assert "--require-hashes" in flags and "--only-binary :all:" in flags
    # the build tools come from the lock itself (scripts/lock-build-tools.sh), hashes included
    assert "lock-build-tools.sh requirements.lock > build-tools.lock" in runs
    copies = [line for line in dockerfile.splitlines() if line.startswith("COPY")]
    assert any("requirements.lock" in c.split() for c in copies), "the lock must be copied before it is installed"
    assert dockerfile.index("requirements.lock") < dockerfile.index("COPY --chown=sentinel:sentinel . .")
    own = re.search(r"pip install (--no-deps [^.\n]*)\.", runs)
    assert own and "--no-build-isolation" in own.group(1), "the package itself must install with --no-deps --no-build-isolation"
    assert not re.search(r"pip install [^&]*(-e |\.\[|pyproject)", runs.replace(own.group(0), "")), \
        "only the lock may bring dependencies into the image"


def test_kafka_image_matches_local_script(services):
    m = re.search(r'KAFKA_VERSION="\$\{KAFKA_VERSION:-([^}]+)\}"', (ROOT / "scripts/services/kafka.sh").read_text())
    assert m
    for name in ("kafka", "kafka-init"):
        assert image_tag(services[name]) == ("apache/kafka", m.group(1)), name


def test_images_are_pinned(services):
    for name, svc in services.items():
        if "image" in svc:
            assert ":" in svc["image"] and not svc["image"].endswith(":latest"), f"{name}: pin {svc['image']}"


# ---------------------------------------------------------------- health
def test_health_checks(services):
    for name in HEALTHCHECKED:
        hc = services[name].get("healthcheck")
        assert hc and hc.get("test"), f"{name} has no health check"
    for name, svc in services.items():
        for dep, cond in (svc.get("depends_on") or {}).items():
            if cond.get("condition") == "service_healthy":
                assert services[dep].get("healthcheck"), f"{name} waits for {dep} to be healthy, which has no check"


# ---------------------------------------------------------------- consistency with conf/
def test_compose_config_is_valid_and_uses_kafka(settings):
    assert settings.source.type == "kafka"
    assert set(settings.sinks.enabled) == {"sqlite", "postgres", "s3"}


def test_kafka_address_and_topic_agree(services, settings):
    k = env(services["kafka"])
    advertised = dict(re.findall(r"(\w+)://([^,]+)", k["KAFKA_ADVERTISED_LISTENERS"]))
    internal = advertised[k["KAFKA_INTER_BROKER_LISTENER_NAME"]]
    assert internal == settings.source.kafka.bootstrap_servers == "kafka:9092"
    assert internal.split(":")[0] in services
    # the simulator streams to that broker and topic
    sim = command(services["simulator"])
    target = sim[sim.index("--stream") + 1]
    assert target == f"kafka://{internal}/{settings.source.kafka.topic}"
    assert env(services["simulator"])["SENTINEL_KAFKA_BOOTSTRAP"] == internal
    # the init container creates that topic with as many partitions as shuffle partitions
    init = env(services["kafka-init"])
    assert init["KAFKA_BOOTSTRAP"] == internal and init["KAFKA_TOPIC"] == settings.source.kafka.topic
    assert int(init["KAFKA_TOPIC_PARTITIONS"]) == settings.spark.shuffle_partitions
    # host listener = the address of scripts/services/kafka.sh, published 1:1
    host = advertised["HOST"]
    assert host == "127.0.0.1:19092"
    assert "19092:19092" in [str(p) for p in services["kafka"]["ports"]]


def test_postgres_env_agrees(services):
    pg = env(services["postgres"])
    for name in ("spark-master", "spark-worker", "simulator"):
        e = env(services[name])
        assert e["PGHOST"] == "postgres" and e["PGPORT"] == "5432"
        assert e["PGUSER"] == pg["POSTGRES_USER"] and e["PGDATABASE"] == pg["POSTGRES_DB"]
        assert e["PGPASSWORD"] == pg["POSTGRES_PASSWORD"], name
    raw = COMPOSE.read_text()
    # the password is never written out, only defaulted from the environment
    assert re.search(r"POSTGRES_PASSWORD:\s*\$\{POSTGRES_PASSWORD:-", raw)
    assert re.search(r"PGPASSWORD:\s*\$\{POSTGRES_PASSWORD:-", raw)


def test_s3_env_agrees(services, settings):
    minio, init = env(services["minio"]), env(services["minio-init"])
    endpoint = settings.sinks.s3.endpoint_url
    assert endpoint == "http://minio:9000" == init["S3_ENDPOINT"]
    assert init["S3_BUCKET"] == settings.sinks.s3.bucket
    assert (init["MINIO_ROOT_USER"], init["MINIO_ROOT_PASSWORD"]) == (minio["MINIO_ROOT_USER"], minio["MINIO_ROOT_PASSWORD"])
    assert len(minio["MINIO_ROOT_PASSWORD"]) >= 8  # MinIO refuses shorter secrets
    for name in ("spark-master", "spark-worker", "simulator"):
        e = env(services[name])
        assert e["SENTINEL_S3_ENDPOINT"] == endpoint
        assert (e["AWS_ACCESS_KEY_ID"], e["AWS_SECRET_ACCESS_KEY"]) == (minio["MINIO_ROOT_USER"], minio["MINIO_ROOT_PASSWORD"])


def test_conf_mounted_where_spark_reads_it(services, dockerfile):
    conf_dir = re.search(r"SPARK_CONF_DIR=(\S+)", dockerfile).group(1)
    assert conf_dir == f"{IMAGE_ROOT}/conf"
    for name in PROJECT_SERVICES:
        assert ("./conf", conf_dir) in mounts(services[name]), f"{name} does not mount ./conf at {conf_dir}"


def test_paths_in_compose_config_are_on_shared_volumes(services, settings):
    """The bundle, history, checkpoint and store paths of compose.toml sit on volumes that the
    driver (spark-master) and every executor (spark-worker) mount at the same place."""
    paths = [settings.model.dir, settings.train.input, settings.stream.model, settings.stream.checkpoint,
             settings.sinks.sqlite.path]
    for name in ("spark-master", "spark-worker"):
        targets = [t for s, t in mounts(services[name]) if not s.startswith(".")]
        for p in paths:
            assert p.startswith("/") and any(p == t or p.startswith(t + "/") for t in targets), (name, p)


def test_spark_addresses_agree(services):
    master = services["spark-master"]
    assert master.get("hostname") == "spark-master"
    assert env(master)["SPARK_LOCAL_IP"] == "spark-master"  # drivers started there are reachable
    assert "8080:8080" in [str(p) for p in master["ports"]]
    for name in ("spark-master", "spark-worker", "simulator"):
        assert env(services[name])["SPARK_MASTER"] == "spark://spark-master:7077"
    events = env(services["spark-master"])["SPARK_EVENTLOG_DIR"]
    assert env(services["spark-history"])["SPARK_EVENTLOG_DIR"] == events
    for name in ("spark-master", "spark-history"):
        assert ("spark-events", events) in mounts(services[name]), name
    assert "18080:18080" in [str(p) for p in services["spark-history"]["ports"]]


def test_submit_script_exists_for_documented_commands():
    submit = ROOT / "scripts" / "submit.sh"
    assert submit.is_file() and submit.stat().st_mode & 0o111
    for job in ("train", "deploy"):
        assert (ROOT / "jobs" / f"{job}.py").is_file()
