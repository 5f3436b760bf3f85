"""Local model registry: list, promote, rollback, atomic pointer, and the CLI's bad input."""
import json
import multiprocessing

import pytest

from sentinel.cli import main
from sentinel.detect.model import BundleError, read_pointer, resolve_bundle
from sentinel.lifecycle.registry import HISTORY, LifecycleError, Registry, promotion_stack
from tests.unit.test_model_pointer import fake_bundle

V1, V2, V3 = "20260101T000000Z", "20260201T000000Z", "20260301T000000Z"


@pytest.fixture
def reg(tmp_path):
    root = tmp_path / "pressure"
    for v in (V1, V2, V3):
        fake_bundle(root, v)
    return Registry(root)


def snapshot(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_list_and_serving_without_a_pointer(reg):
    frame = reg.list()
    assert frame["version"].tolist() == [V1, V2, V3]
    assert frame["promoted"].tolist() == [False, False, True]  # no pointer: the newest is served
    assert frame["complete"].all() and reg.promoted() is None and reg.serving() == V3


def test_promote_rollback_as_a_stack(reg):
    for v in (V1, V2, V3):
        rec = reg.promote(v, "ana", f"promote {v}")
        assert rec["changed"] and read_pointer(reg.url) == v and resolve_bundle(reg.url).name == v
    assert reg.promote(V3, "ana")["changed"] is False  # already promoted: nothing written
    assert len(reg.history()) == 3
    assert reg.rollback("bob")["version"] == V2
    assert reg.rollback("bob")["version"] == V1
    with pytest.raises(LifecycleError, match="nothing to roll back to"):
        reg.rollback("bob")
    assert reg.promoted() == V1
    assert [h["action"] for h in reg.history()] == ["promote", "promote", "promote", "rollback", "rollback"]
    assert reg.history()[-1]["previous"] == V2 and reg.history()[-1]["promoted_by"] == "bob"
    assert reg.show(V1)["promoted"] and len(reg.show(V1)["promotions"]) == 2


def test_promotion_stack_rules():
    h = [{"version": "a"}, {"version": "b"}, {"version": "c"}, {"version": "b", "action": "rollback"},
         {"version": "d"}, {"version": "b", "action": "rollback"}]
    assert promotion_stack(h) == ["a", "b"]


def test_pin_serving_keeps_the_newest_served_before_a_challenger_lands(reg, tmp_path):
    assert reg.pin_serving("retrain") == V3 and reg.promoted() == V3
    staged = tmp_path / "staged"
    fake_bundle(staged, "20260401T000000Z")
    reg.add_version(staged / "20260401T000000Z", "20260401T000000Z")
    assert reg.versions()[-1] == "20260401T000000Z" and reg.serving() == V3
    assert resolve_bundle(reg.url).name == V3  # the deploy job still serves the pinned one
    with pytest.raises(LifecycleError, match="immutable"):
        reg.add_version(staged / "20260401T000000Z", "20260401T000000Z")


def test_incomplete_and_incompatible_versions_are_refused_unchanged(reg):
    reg.promote(V3, "ana")
    (reg.root / V2 / "model.keras").unlink()
    before = snapshot(reg.root)
    with pytest.raises(LifecycleError, match="lacks model.keras"):
        reg.promote(V2, "ana")
    fake_bundle(reg.root, "20260501T000000Z", features=("pressure", "flow"))
    with pytest.raises(LifecycleError, match="--force"):
        reg.promote("20260501T000000Z", "ana")
    assert {k: v for k, v in snapshot(reg.root).items() if not k.startswith("20260501")} == before
    assert reg.promote("20260501T000000Z", "ana", force=True)["changed"]


def _poll_pointer(root, stop, out):
    seen, bad = set(), 0
    while not stop.is_set():
        try:
            seen.add(read_pointer(root))
        except (BundleError, ValueError):
            bad += 1
    out.put((bad, sorted(map(str, seen))))


def test_a_reader_never_sees_a_partial_pointer(reg):
    """Another process polls the pointer while it is rewritten 60 times with a 20 kB record:
    every read is one whole version. (The same reader sees hundreds of empty or cut files when
    the pointer is rewritten in place with ``write_text``.)"""
    ctx = multiprocessing.get_context("fork")
    stop, out = ctx.Event(), ctx.Queue()
    reader = ctx.Process(target=_poll_pointer, args=(reg.url, stop, out))
    reader.start()
    try:
        for i in range(60):
            reg.promote((V1, V2)[i % 2], "ana", "x" * 20_000)
    finally:
        stop.set()
        bad, seen = out.get(timeout=30)
        reader.join(timeout=30)
    assert bad == 0
    assert set(seen) <= {V1, V2, "None"}
    assert not list(reg.root.glob(".promoted.*"))  # no temporary file left behind


def run_cli(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_bad_input_is_one_sentence_and_changes_nothing(reg, tmp_path, capsys):
    reg.promote(V2, "ana")
    before = snapshot(reg.root)
    r = ["--registry", str(reg.root)]
    cases = [
        (["models", "promote", "20990101T000000Z", *r], "has no version '20990101T000000Z'"),
        (["models", "promote", "../etc", *r], "has no version"),
        (["models", "show", *r], "needs a VERSION"),
        (["models", "rollback", *r], "nothing to roll back to"),
        (["retrain", "--promote", "sometimes", "--history", str(tmp_path / "h.csv"), *r], "promotion policy 'sometimes'"),
        (["retrain", "--history", str(tmp_path / "missing.csv"), *r], "does not exist"),
        (["retrain", "--since", "2d", "--history", str(tmp_path / "h.csv"), *r], "leaves no days to train on"),
        (["models", "list", "--registry", str(reg.root / V1)], "is one bundle, not a registry"),
    ]
    for argv, words in cases:
        code, out, err = run_cli(capsys, *argv)
        assert code == 2, (argv, out, err)
        errors = [line for line in err.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and words in errors[0] and errors[0].count(". ") == 0, err
        assert snapshot(reg.root) == before, argv


def test_cli_list_show_promote_rollback(reg, capsys):
    r = ["--registry", str(reg.root)]
    code, out, _ = run_cli(capsys, "models", "list", *r)
    assert code == 0 and V3 in out and "no pointer yet" in out
    code, out, _ = run_cli(capsys, "models", "promote", V1, "--by", "ana", *r)
    assert code == 0 and f"promote {V1}" in out and read_pointer(reg.url) == V1
    code, out, _ = run_cli(capsys, "models", "list", "--format", "json", *r)
    assert json.loads(out)["promoted"] == V1
    code, out, _ = run_cli(capsys, "models", "promote", V3, *r)
    code, out, _ = run_cli(capsys, "models", "rollback", "--by", "bob", *r)
    assert code == 0 and read_pointer(reg.url) == V1
    code, out, _ = run_cli(capsys, "models", "show", V1, *r)
    assert code == 0 and "[served]" in out and "rollback" in out
    assert len((reg.root / HISTORY).read_text().splitlines()) == 3
