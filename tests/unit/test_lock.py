"""The lock files agree with pyproject.toml, and every install uses them with hashes.

A dependency added or re-pinned in pyproject.toml without `bash scripts/lock.sh` fails here in
a second, with a sentence saying so, instead of a fresh machine installing something else than
what was tested (or `pip install --require-hashes` failing there).
"""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RUNTIME_LOCK = ROOT / "requirements.lock"
DEV_LOCK = ROOT / "requirements-dev.lock"
RELOCK = "run `bash scripts/lock.sh` and commit requirements.lock and requirements-dev.lock"
_REQ = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?\s*(?:==\s*([^\s;,]+))?")


def canonical(name: str) -> str:
    """PEP 503 normalised project name (``PyYAML`` = ``pyyaml``, ``ml_dtypes`` = ``ml-dtypes``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement(spec: str) -> tuple[str, str | None]:
    """``"moto[server]==5.2.5"`` -> ("moto", "5.2.5"); a range or bare name -> (name, None)."""
    m = _REQ.match(spec.strip())
    assert m, f"cannot read the requirement {spec!r} in pyproject.toml"
    return canonical(m.group(1)), m.group(3)


def locked(path: Path) -> dict[str, tuple[str, list[str]]]:
    """A lock file -> {name: (version, [hashes])}."""
    out: dict[str, tuple[str, list[str]]] = {}
    current = None
    for line in path.read_text().splitlines():
        if m := re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", line):
            current = canonical(m.group(1))
            out[current] = (m.group(2), [])
        elif current and (h := re.search(r"--hash=sha256:([0-9a-f]{64})", line)):
            out[current][1].append(h.group(1))
        elif line and not line.startswith((" ", "#")):
            raise AssertionError(f"{path.name}: unexpected line {line!r}: {RELOCK}")
    return out


@pytest.fixture(scope="module")
def project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


@pytest.fixture(scope="module")
def runtime() -> dict:
    return locked(RUNTIME_LOCK)


@pytest.fixture(scope="module")
def dev() -> dict:
    return locked(DEV_LOCK)


def missing(pins: list[str], lock: dict, lock_name: str) -> list[str]:
    problems = []
    for spec in pins:
        name, version = requirement(spec)
        if name not in lock:
            problems.append(f"pyproject.toml lists {spec} but {lock_name} has no {name}")
        elif version is not None and lock[name][0] != version:
            problems.append(f"pyproject.toml pins {name}=={version} but {lock_name} holds {name}=={lock[name][0]}")
    return problems


def test_runtime_lock_holds_every_runtime_pin(project, runtime):
    deps = project["project"]["dependencies"] + project["build-system"]["requires"]
    problems = missing(deps, runtime, RUNTIME_LOCK.name)
    assert not problems, "; ".join(problems) + f": {RELOCK}"


def test_dev_lock_holds_every_pin_and_extra(project, dev):
    deps = (project["project"]["dependencies"] + project["build-system"]["requires"]
            + [d for extra in project["project"].get("optional-dependencies", {}).values() for d in extra])
    problems = missing(deps, dev, DEV_LOCK.name)
    assert not problems, "; ".join(problems) + f": {RELOCK}"


def test_dev_lock_has_exactly_the_runtime_versions(runtime, dev):
    # what the tests run against is what the image installs
    differ = [f"{n} {v} vs {dev.get(n, ('none',))[0]}" for n, (v, _) in runtime.items() if dev.get(n, (None,))[0] != v]
    assert not differ, f"requirements-dev.lock and requirements.lock disagree on {', '.join(differ)}: {RELOCK}"


@pytest.mark.parametrize("lock", [RUNTIME_LOCK, DEV_LOCK], ids=lambda p: p.name)
def test_every_locked_package_has_a_hash(lock):
    unhashed = [n for n, (_, hashes) in locked(lock).items() if not hashes]
    assert not unhashed, f"{lock.name} has packages without --hash ({', '.join(unhashed)}): {RELOCK}"


def test_setup_installs_the_dev_lock_with_hashes():
    setup = re.sub(r"\\\n\s*", " ", (ROOT / "scripts" / "setup.sh").read_text())  # join continued lines
    assert "LOCK=requirements-dev.lock" in setup
    assert re.search(r"pip install [^\n]*--require-hashes [^\n]*-r \$LOCK", setup)
    assert re.search(r"pip install [^\n]*--no-deps [^\n]*-e \.", setup)
    # the package's own install must not resolve dependencies the lock does not hold
    assert not re.search(r"pip install [^\n]*-e ['\"]?\.\[", setup)


def test_mlflow_is_a_bench_extra_not_a_runtime_dependency(project, runtime, dev):
    # the product never imports MLflow: it stays out of the image (requirements.lock)
    assert "mlflow-skinny" in dev and "mlflow-skinny" not in runtime and "mlflow" not in runtime
    assert any(requirement(d)[0] == "mlflow-skinny" for d in project["project"]["optional-dependencies"]["bench"])


@pytest.mark.parametrize("lock", ["requirements.lock", "requirements-dev.lock"])
def test_build_tools_come_from_the_lock_with_their_hashes(lock):
    """setup.sh and the Dockerfile install these first (a fresh venv's setuptools cannot build
    pyspark's source archive): each pin with every hash the lock gives it, nothing else."""
    import subprocess
    out = subprocess.run(["bash", "scripts/lock-build-tools.sh", lock], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    pins = re.findall(r"^([a-z0-9_.-]+)==(\S+) \\$", out, re.M)
    assert sorted(name for name, _ in pins) == ["packaging", "setuptools", "wheel"]
    text = (ROOT / lock).read_text()
    for name, version in pins:
        block = re.search(rf"^{re.escape(name)}=={re.escape(version)} \\\n((?:    --hash=\S+(?: \\)?\n)+)", text, re.M)
        assert block, f"{name}=={version} not in {lock}"
        assert set(re.findall(r"sha256:\w+", block.group(1))) == \
            set(re.findall(r"sha256:\w+", out.split(f"{name}=={version}")[1].split("==")[0]))
