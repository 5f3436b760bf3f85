"""The package layout's rules, checked by walking every import in lib/sentinel (function-level
imports included: a lazy import is still a dependency).

- Dependencies point down LAYERS and never up; ``serve`` never imports ``stream``.
- Nothing imports ``sentinel.cli`` but ``cli`` itself; nothing imports the jobs.
- Only ``stream`` imports pyspark.
- Only ``cli`` parses arguments (argparse) or prints for a person (``print``).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

LIB = Path(__file__).resolve().parents[2] / "lib" / "sentinel"
# Highest first: a module may import its own layer and the ones below it.
LAYERS = ["cli", "serve", "lifecycle", "stream", "incidents", "detect", "store", "ingest", "config"]
RANK = {name: len(LAYERS) - i for i, name in enumerate(LAYERS)}
FORBIDDEN = {("serve", "stream")}  # the web app reads the stores; it never runs the query


def layer_of(module: str) -> str:
    """``sentinel.detect.scoring`` -> ``detect``; ``sentinel`` and ``sentinel.config`` -> ``config``."""
    parts = module.split(".")
    if len(parts) == 1 or parts[1] in ("config", "__init__"):
        return "config"
    return parts[1]


def modules():
    for path in sorted(LIB.rglob("*.py")):
        rel = path.relative_to(LIB.parent).with_suffix("")
        name = ".".join(p for p in rel.parts if p != "__init__")
        yield name, path, ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def imports(tree: ast.AST, module: str) -> set[str]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = module.split(".")[:-node.level] if not module.endswith("__init__") else module.split(".")
                out.add(".".join(base + ([node.module] if node.module else [])))
            elif node.module:
                # `from sentinel import x` names sub-modules: count each as an import
                if node.module == "sentinel":
                    out.update(f"sentinel.{a.name}" for a in node.names)
                else:
                    out.add(node.module)
    return out


ALL = list(modules())


def test_every_subpackage_has_a_layer():
    found = {layer_of(name) for name, _, _ in ALL}
    assert found <= set(LAYERS), f"add {sorted(found - set(LAYERS))} to LAYERS (and ARCHITECTURE's table)"


@pytest.mark.parametrize("name,path,tree", ALL, ids=[n for n, _, _ in ALL])
def test_imports_follow_the_layers(name, path, tree):
    mine = layer_of(name)
    for imp in imports(tree, name):
        if imp == "jobs" or imp.startswith("jobs."):
            pytest.fail(f"{name} imports {imp}: jobs/ are entry points, nothing imports them")
        if not imp.startswith("sentinel"):
            continue
        theirs = layer_of(imp)
        assert theirs in RANK, f"{name} imports {imp}, which is in no layer"
        if theirs == "cli":
            assert mine == "cli", f"{name} imports {imp}: nothing outside cli/ may import it"
        assert (mine, theirs) not in FORBIDDEN, f"{name} ({mine}) must not import {imp} ({theirs})"
        assert RANK[theirs] <= RANK[mine], f"{name} ({mine}) imports {imp} ({theirs}), a layer above it"


@pytest.mark.parametrize("name,path,tree", ALL, ids=[n for n, _, _ in ALL])
def test_only_stream_imports_pyspark(name, path, tree):
    if layer_of(name) in ("stream",):
        return
    spark = sorted(i for i in imports(tree, name) if i == "pyspark" or i.startswith("pyspark."))
    assert not spark, f"{name} imports {spark}: only sentinel.stream may use Spark"


@pytest.mark.parametrize("name,path,tree", ALL, ids=[n for n, _, _ in ALL])
def test_only_cli_parses_arguments_or_prints(name, path, tree):
    if layer_of(name) == "cli":
        return
    assert "argparse" not in imports(tree, name), f"{name} imports argparse: argument parsing belongs in cli/"
    prints = [n.lineno for n in ast.walk(tree)
              if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "print"]
    assert not prints, f"{name} calls print() at line(s) {prints}: output for people belongs in cli/ (log instead)"


def test_the_rules_catch_a_violation():
    """The walker sees lazy and `from sentinel import x` imports (else the rules could pass vacuously)."""
    tree = ast.parse("def f():\n    from sentinel import cli\n    import pyspark.sql\n")
    assert imports(tree, "sentinel.detect.x") == {"sentinel.cli", "pyspark.sql"}
