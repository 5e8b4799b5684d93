"""The fuzz harness (bench/fuzz.py, issue 15): its saved findings replayed, and a few seconds of
fuzzing per target.  Each input runs in a forked child; none may be a bug: another exception
than the project's errors, a crash, a hang, invalid JSON, or an ONNX model accepted that
onnx.checker's full check rejects."""
import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "tests" / "fuzz_corpus"


def _fuzz():
    spec = importlib.util.spec_from_file_location("fuzz", ROOT / "bench" / "fuzz.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("fuzz", mod)
    spec.loader.exec_module(mod)
    return mod


fuzz = _fuzz()
SAVED = sorted(p for p in CORPUS.glob("*") if p.suffix in (".onnx", ".toml"))


@pytest.mark.parametrize("path", SAVED, ids=[p.name for p in SAVED])
def test_a_saved_finding_is_no_bug_any_more(path):
    fuzz.preload()
    target = path.name.split("-", 1)[0]
    res = fuzz.run_one(target, path.read_bytes(), timeout=120)
    assert res["kind"] != "bug", res["why"]


@pytest.mark.parametrize("target, seconds", [("onnx", 5), ("chip", 3), ("sweep", 3)])
def test_a_short_fuzz_run_finds_no_bug(target, seconds):
    out = fuzz.fuzz(target, seconds, seed=0, timeout=120, corpus=None, log=lambda *_: None, seeds_limit=300)
    c = out["counts"]
    assert c["tried"] > 0
    assert c["bug"] == 0, out["bugs"][:3]
    assert c["tried"] == c["refused"] + c["accepted"]


def test_the_harness_tells_a_crash_a_hang_and_a_bare_exception_from_a_refusal(monkeypatch):
    import os
    import time

    from models.errors import ModelError

    def verdicts(fn):
        monkeypatch.setitem(fuzz.RUN, "chip", lambda data, send: fn())
        return fuzz.run_one("chip", b"", timeout=3)

    def refuse():
        raise ModelError("x.onnx: node 'n' (Conv): a reason")
    assert verdicts(refuse)["kind"] == "refused"
    assert verdicts(lambda: os.abort())["why"].startswith("the process died (signal 6)")
    assert verdicts(lambda: time.sleep(60))["why"].startswith("hang")
    assert verdicts(lambda: [][1])["why"].startswith("IndexError")
    assert verdicts(lambda: {"kind": "accepted"})["kind"] == "accepted"
