"""Fuzz the edges of the simulator: the ONNX importer + compile, chip files, sweep files.

    .venv/bin/python bench/fuzz.py --target onnx --seconds 600            # 10 minutes
    .venv/bin/python bench/fuzz.py --target chip --seconds 60
    .venv/bin/python bench/fuzz.py --target sweep --seconds 60
    .venv/bin/python bench/fuzz.py --replay tests/fuzz_corpus               # the saved crashes

Each input runs in a forked child (an abort or a hang there is a finding, not the end of the
fuzzer) under an address-space limit, and is classified as

* ``refused``: one of the project's error types (``ModelError``, ``ConfigError``,
  ``ChipError``, ``SweepError``, ``LoweringError``, ``GraphError``, ``HostMemoryError``...:
  all ``ValueError`` subclasses whose message names the file / node / option);
* ``accepted``: imported and compiled (ONNX), loaded and simulated (chip), loaded and each
  of its first points configured (sweep);
* ``bug``: any other exception (a bare ``IndexError``, ``TypeError``, ``MemoryError``...),
  a child killed by a signal (an abort in native code), a hang longer than ``--timeout``,
  a report that is not valid JSON (``Infinity``), or an ONNX model accepted that
  ``onnx.checker.check_model(m, full_check=True)`` rejects (a shape, type or arity fault).

Inputs: mutations of real files.  ONNX: the node tests and model files onnx ships
(``onnx/backend/test/data``: node tests, ``light/*.onnx``, ``pytorch-*``, ``simple``), each
mutated 1-3 times: a graph input's dim, an attribute's value (or type, or its absence), a
node's op type, its inputs (dropped, repeated, unknown), an initializer's dims or type, a node
dropped or repeated, the opset, or the serialized bytes (flipped, truncated).  Chip and sweep
files: TOML written from random keys (the real fields and junk) and hostile values (0,
negative, 2^63, NaN, inf, text, lists, tables).

A ``bug`` input is written to ``--corpus`` (default ``tests/fuzz_corpus/``) as
``TARGET-HASH.onnx`` / ``.toml``; ``tests/test_fuzz.py`` replays every file there (none may be
a bug any more) and runs a few seconds of each target in ``make test``.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import resource
import select
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CORPUS = ROOT / "tests" / "fuzz_corpus"
TARGETS = ("onnx", "chip", "sweep")
EXT = {"onnx": ".onnx", "chip": ".toml", "sweep": ".toml"}
#: CHOSEN: each child may map this much address space; the host-memory check is told a
#: quarter of it, so a graph it lets through that still runs out is a finding (MemoryError)
CHILD_ADDRESS_SPACE = 8 << 30
CHILD_HOST_MEMORY = "2G"
#: CHOSEN: ONNX models are compiled (not only imported) up to this many ops
COMPILE_MAX_OPS = 200


def _clean_errors():
    from compiler.graph import GraphError
    from compiler.hostmem import HostMemoryError
    from compiler.planners import LoweringError
    from hardware.chips import ChipError
    from models.errors import ModelError
    from simulator.config import ConfigError
    from simulator.report import ReportError
    from simulator.sweep import SweepError
    return (ModelError, ConfigError, ChipError, SweepError, LoweringError, GraphError, HostMemoryError, ReportError)


# -- targets: bytes in, a message (the classification) out --------------------------------------
def _tmpfile(data: bytes, suffix: str) -> str:
    fd, path = tempfile.mkstemp(suffix=suffix, prefix="fuzz-")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return path


def _json_ok(report):
    """The report as --json writes it: ReportError (refused, naming the value) on NaN / Infinity;
    any other failure to serialise is a bug."""
    from simulator.report import json_text
    json.loads(json_text(report))


def target_onnx(data: bytes, send):
    """Import, then (small graphs) compile; accepted models are checked by onnx's full check."""
    import onnx

    from compiler.hostmem import estimate_bytes
    from models.onnx_import import load_onnx
    from simulator.config import RunConfig
    from simulator.run import build
    path = _tmpfile(data, ".onnx")
    try:
        batch = _fixed_batch(data)
        og = load_onnx(path, batch=batch)
        if len(og) <= COMPILE_MAX_OPS and estimate_bytes(og) < (1 << 30):
            c = build(RunConfig(model=og, batch=batch, suggest=False), simulate=False)
            _json_ok(c.report)
    finally:
        os.remove(path)
    send({"kind": "accepted"})
    m = onnx.ModelProto()
    m.ParseFromString(data)
    try:
        onnx.checker.check_model(m, full_check=True)
    except Exception as e:      # noqa: BLE001 - onnx's verdict, recorded
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        return {"kind": "bug", "why": "accepted, but onnx.checker full_check rejects it: " + first}
    return {"kind": "accepted"}


def _fixed_batch(data: bytes) -> int:
    """dim 0 of the first graph input when it is a fixed positive number (else 1): what
    --batch must be for the file to import."""
    import onnx
    m = onnx.ModelProto()
    try:
        m.ParseFromString(data)
        inits = {i.name for i in m.graph.initializer}
        for vi in m.graph.input:
            if vi.name in inits:
                continue
            dims = vi.type.tensor_type.shape.dim
            if dims and dims[0].HasField("dim_value") and 0 < dims[0].dim_value <= 4096:
                return int(dims[0].dim_value)
            return 1
    except Exception:   # noqa: BLE001 - the importer reports a bad file
        pass
    return 1


def target_chip(data: bytes, send):
    from hardware.chips import get_chip
    from simulator.config import RunConfig
    from simulator.run import run
    path = _tmpfile(data, ".toml")
    try:
        chip = get_chip(path)
        r = run(RunConfig(model="mnist-mlp", chip=chip, suggest=False), simulate=True)
        _json_ok(r.report)
    finally:
        os.remove(path)
    return {"kind": "accepted"}


def target_sweep(data: bytes, send):
    from simulator.sweep import load_sweep, point_config
    path = _tmpfile(data, ".toml")
    try:
        spec = load_sweep(path)
        for p in spec.points()[:3]:
            point_config(p).layout()
    finally:
        os.remove(path)
    return {"kind": "accepted"}


RUN = {"onnx": target_onnx, "chip": target_chip, "sweep": target_sweep}


def preload():
    """Import what the targets use once, here, so that each forked child starts warm."""
    import importlib
    for name in ("onnx.checker", "onnx.shape_inference", "compiler.hostmem", "models.onnx_import",
                 "simulator.run", "simulator.sweep", "simulator.report", "hardware.chips"):
        importlib.import_module(name)
    _clean_errors()


def run_one(target: str, data: bytes, timeout: float = 60.0) -> dict:
    """Run one input in a forked child; ``{"kind": refused | accepted | bug, "why": ...}``."""
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:                                  # the child
        code = 0
        try:
            os.close(rfd)
            import faulthandler
            faulthandler.disable()
            resource.setrlimit(resource.RLIMIT_AS, (CHILD_ADDRESS_SPACE, CHILD_ADDRESS_SPACE))
            os.environ["IPUSIM_HOST_MEMORY"] = CHILD_HOST_MEMORY
            null = os.open(os.devnull, os.O_WRONLY)     # native code's messages too (an abort's assertion)
            os.dup2(null, 1)
            os.dup2(null, 2)
            sys.stdout = sys.stderr = open(os.devnull, "w")
            out = os.fdopen(wfd, "w")

            def send(msg):
                out.write(json.dumps(msg) + "\n")
                out.flush()
            import warnings
            warnings.simplefilter("ignore")
            try:
                res = RUN[target](data, send)
            except _clean_errors() as e:
                msg = str(e.args[0]) if e.args else ""
                res = {"kind": "refused", "why": f"{type(e).__name__}: {msg[:300]}"} if msg.strip() else \
                    {"kind": "bug", "why": f"{type(e).__name__} without a message"}
            except BaseException as e:   # noqa: BLE001 - everything else is a finding
                tb = traceback.extract_tb(e.__traceback__)
                where = next((f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in reversed(tb)
                              if str(ROOT) in f.filename and "/.venv/" not in f.filename), "?")
                res = {"kind": "bug", "why": f"{type(e).__name__}: {str(e)[:200]} (at {where})"}
            send(res)
        except BaseException:   # noqa: BLE001
            code = 3
        finally:
            os._exit(code)
    os.close(wfd)
    buf, deadline, msgs = b"", time.monotonic() + timeout, []
    with os.fdopen(rfd, "rb") as r:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                if msgs and msgs[-1]["kind"] == "accepted":   # the importer was done; onnx's checker hung
                    return {"kind": "accepted", "why": "onnx.checker did not finish"}
                return {"kind": "bug", "why": f"hang: no answer in {timeout:.0f} s"}
            ready, _, _ = select.select([r], [], [], left)
            if not ready:
                continue
            chunk = os.read(r.fileno(), 1 << 16)
            if not chunk:
                break
            buf += chunk
            *lines, buf = buf.split(b"\n")
            msgs += [json.loads(x) for x in lines if x.strip()]
    _, status = os.waitpid(pid, 0)
    if msgs and (len(msgs) > 1 or msgs[-1]["kind"] != "accepted" or not os.WIFSIGNALED(status)):
        return msgs[-1]
    if msgs:     # accepted, then onnx's own checker crashed: onnx's problem, not the importer's
        return {"kind": "accepted", "why": "onnx.checker crashed"}
    how = f"signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status) else f"exit code {os.WEXITSTATUS(status)}"
    return {"kind": "bug", "why": f"the process died ({how}) without an answer"}


# -- inputs: seeds and mutations ------------------------------------------------------------------
def onnx_seeds(max_bytes=2_000_000, limit=None, rng=None, node_tests=True) -> list[bytes]:
    """Serialized models: onnx's node tests (generated: about 10 s), then the model files under
    its test data."""
    import onnx
    out = []
    if node_tests:
        import warnings

        from onnx.backend.test.loader import load_model_tests
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = [c.model.SerializeToString() for c in load_model_tests(kind="node") if c.model is not None]
    data = Path(onnx.__file__).parent / "backend" / "test" / "data"
    for p in sorted(data.rglob("*.onnx")):
        if p.stat().st_size <= max_bytes:
            out.append(p.read_bytes())
    if limit is not None:       # a sample (the short runs of make test)
        (rng or random.Random(0)).shuffle(out)
    # only seeds onnx's full check passes: a mutant it rejects is then a mutation's fault
    keep = []
    for b in out:
        if limit is not None and len(keep) >= limit:
            break
        m = onnx.ModelProto()
        try:
            m.ParseFromString(b)
            onnx.checker.check_model(m, full_check=True)
        except Exception:   # noqa: BLE001 - onnx's own test data it cannot check fully
            continue
        keep.append(b)
    return keep


_DIMS = (0, -1, 1, 2, 3, 7, 64, 1 << 20, 1 << 31, (1 << 63) - 1)
_INTS = (0, -1, -2, 1, 2, 3, 5, 64, 1 << 31, -(1 << 31), (1 << 63) - 1)
_OPS = ("Conv", "Gemm", "MatMul", "Relu", "MaxPool", "AveragePool", "BatchNormalization", "Reshape", "Concat",
        "Slice", "Transpose", "Softmax", "Add", "Mul", "Gather", "Pad", "ReduceMean", "LayerNormalization",
        "Flatten", "Squeeze", "Unsqueeze", "Cast", "Split", "Expand", "Where", "Resize", "TopK", "Einsum")


def mutate_onnx(data: bytes, rng: random.Random) -> bytes:
    import onnx
    if rng.random() < 0.08:                      # raw bytes: flipped or truncated
        b = bytearray(data)
        if b and rng.random() < 0.5:
            for _ in range(rng.randint(1, 8)):
                b[rng.randrange(len(b))] = rng.randrange(256)
        else:
            b = b[: rng.randrange(max(len(b), 1))]
        return bytes(b)
    m = onnx.ModelProto()
    m.ParseFromString(data)
    g = m.graph
    for _ in range(rng.randint(1, 3)):
        k = rng.randrange(9)
        nodes = list(g.node)
        if k == 0 and len(g.input):                                # a graph input's dim
            vi = g.input[rng.randrange(len(g.input))]
            dims = vi.type.tensor_type.shape.dim
            if len(dims):
                d = dims[rng.randrange(len(dims))]
                if rng.random() < 0.15:
                    d.dim_param = "n"
                else:
                    d.dim_value = rng.choice(_DIMS)
            elif vi.type.tensor_type.HasField("shape"):
                vi.type.tensor_type.shape.dim.add().dim_value = rng.choice(_DIMS)
        elif k in (1, 2) and nodes:                                # an attribute
            n = rng.choice(nodes)
            if n.attribute and rng.random() < 0.8:
                a = n.attribute[rng.randrange(len(n.attribute))]
                r = rng.random()
                if r < 0.15:
                    n.attribute.remove(a)
                elif a.type == onnx.AttributeProto.INT:
                    a.i = rng.choice(_INTS)
                elif a.type == onnx.AttributeProto.INTS and len(a.ints):
                    if r < 0.3:
                        a.ints.append(rng.choice(_INTS))
                    elif r < 0.4:
                        del a.ints[-1]
                    else:
                        a.ints[rng.randrange(len(a.ints))] = rng.choice(_INTS)
                elif a.type == onnx.AttributeProto.FLOAT:
                    a.f = rng.choice((0.0, -1.0, float("nan"), float("inf"), 1e30))
                elif a.type == onnx.AttributeProto.STRING:
                    a.s = rng.choice((b"", b"BOGUS", b"SAME_UPPER", b"VALID", b"NOTSET"))
                else:
                    a.type = rng.choice((onnx.AttributeProto.INT, onnx.AttributeProto.FLOAT,
                                         onnx.AttributeProto.STRING))
            else:
                name = rng.choice(("axis", "axes", "kernel_shape", "strides", "pads", "dilations", "group",
                                   "perm", "to", "keepdims", "transA", "transB", "alpha", "mode", "auto_pad"))
                if rng.random() < 0.5:
                    n.attribute.append(onnx.helper.make_attribute(name, rng.choice(_INTS)))
                else:
                    n.attribute.append(onnx.helper.make_attribute(name, [rng.choice(_INTS[:7])
                                                                         for _ in range(rng.randint(1, 4))]))
        elif k == 3 and nodes:                                     # an op type
            rng.choice(nodes).op_type = rng.choice(_OPS)
        elif k == 4 and nodes:                                     # a node's inputs
            n = rng.choice(nodes)
            r = rng.random()
            if r < 0.3 and len(n.input):
                del n.input[rng.randrange(len(n.input))]
            elif r < 0.6 and len(n.input):
                n.input.append(n.input[rng.randrange(len(n.input))])
            elif r < 0.8 and len(n.input):
                n.input[rng.randrange(len(n.input))] = rng.choice(("", "nowhere", n.output[0] if n.output else ""))
            elif len(nodes) > 1:
                other = rng.choice(nodes)
                if other.output and len(n.input):
                    n.input[rng.randrange(len(n.input))] = other.output[0]
        elif k == 5 and len(g.initializer):                        # an initializer
            t = g.initializer[rng.randrange(len(g.initializer))]
            r = rng.random()
            if r < 0.5 and len(t.dims):
                t.dims[rng.randrange(len(t.dims))] = rng.choice(_DIMS)
            elif r < 0.7:
                t.dims.append(rng.choice((1, 2, 3)))
            else:
                t.data_type = rng.choice((onnx.TensorProto.FLOAT16, onnx.TensorProto.INT64, onnx.TensorProto.INT32,
                                          onnx.TensorProto.STRING, onnx.TensorProto.BOOL, 0))
        elif k == 6 and nodes:                                     # a node dropped or repeated
            if rng.random() < 0.5:
                g.node.remove(rng.choice(nodes))
            else:
                n = g.node.add()
                n.CopyFrom(rng.choice(nodes))
        elif k == 7 and len(m.opset_import):                       # the opset
            m.opset_import[0].version = rng.choice((1, 6, 9, 11, 13, 17, 18, 21, 99))
        elif k == 8 and len(g.output):                             # an output's declared shape
            dims = g.output[rng.randrange(len(g.output))].type.tensor_type.shape.dim
            if len(dims):
                dims[rng.randrange(len(dims))].dim_value = rng.choice(_DIMS[1:6])
    return m.SerializeToString()


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "nan" if v != v else ("inf" if v == float("inf") else "-inf" if v == -float("inf") else repr(v))
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {_toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(v)


def _hostile(rng: random.Random, good=None):
    r = rng.random()
    if good is not None and r < 0.45:
        return good
    return rng.choice((0, -1, 1, 2, 3, 1 << 16, 1 << 31, (1 << 63) - 1, -(1 << 63), 0.0, -0.5, 0.5, 1.5, 1e-300,
                       1e300, float("nan"), float("inf"), -float("inf"), "", "x", "gc200", "mnist-mlp", "fp16",
                       "pipeline", "1,2", True, False, [], [1, "a"], [0.5, 2], {"a": 1}))


def toml_text(d: dict) -> bytes:
    return "".join(f"{json.dumps(k)} = {_toml_value(v)}\n" for k, v in d.items()).encode()


def random_chip(rng: random.Random) -> bytes:
    from hardware.chips import VALUE_FIELDS, gc200
    d = {"base": rng.choice(("gc200", "gc2", "bow", "nope", 3))} if rng.random() < 0.9 else {}
    if rng.random() < 0.7:
        d["name"] = rng.choice(("fz", "", 5))
    for f in rng.sample(list(VALUE_FIELDS), rng.randint(1, 4)):
        good = getattr(gc200, f, None)
        if isinstance(good, dict):
            good = {k: _hostile(rng, v) for k, v in list(good.items())[:2]}
        d[f] = _hostile(rng, good)
    if rng.random() < 0.1:
        d["bogus_key"] = 1
    return toml_text(d)


def random_sweep(rng: random.Random) -> bytes:
    from hardware.chips import VALUE_FIELDS
    from simulator.config import _NAMES
    d = {}
    if rng.random() < 0.9:
        d["model"] = rng.choice(("mnist-mlp", ["mnist-mlp", "vgg16"], ["mnist-mlp", 5], 5, [], "nope.onnx"))
    for k in rng.sample(list(_NAMES) + list(VALUE_FIELDS) + ["simulate", "name", "junk"], rng.randint(1, 4)):
        v = _hostile(rng)
        d[k] = [v, _hostile(rng)] if rng.random() < 0.4 else v
    return toml_text(d)


def generate(target: str, rng: random.Random, seeds) -> bytes:
    if target == "onnx":
        return mutate_onnx(rng.choice(seeds), rng)
    return random_chip(rng) if target == "chip" else random_sweep(rng)


# -- the loop -------------------------------------------------------------------------------------
def save_bug(corpus: Path, target: str, data: bytes) -> Path:
    corpus.mkdir(parents=True, exist_ok=True)
    p = corpus / f"{target}-{hashlib.sha1(data).hexdigest()[:12]}{EXT[target]}"
    p.write_bytes(data)
    return p


def fuzz(target: str, seconds: float, *, seed: int = 0, timeout: float = 60.0, corpus: Path | None = CORPUS,
         log=print, verbose=False, seeds_limit=None) -> dict:
    """Fuzz ``target`` for ``seconds`` (after loading the seeds); counts by kind, and the bugs
    (why, file).  ``seeds_limit``: mutate a sample of that many ONNX model files (not the node
    tests, which take seconds to generate)."""
    rng = random.Random(seed)
    preload()
    seeds = onnx_seeds(limit=seeds_limit, rng=random.Random(seed), node_tests=seeds_limit is None) \
        if target == "onnx" else None
    counts = {"tried": 0, "refused": 0, "accepted": 0, "bug": 0}
    bugs, whys = [], {}
    t_end = time.monotonic() + seconds
    while time.monotonic() < t_end:
        try:
            data = generate(target, rng, seeds)
        except Exception:   # noqa: BLE001 - a mutation that onnx cannot serialize: skip it
            continue
        res = run_one(target, data, timeout=timeout)
        counts["tried"] += 1
        counts[res["kind"]] += 1
        if verbose:
            log(f"{res['kind']:8s} {res.get('why', '')}")
        if res["kind"] == "bug":
            key = res["why"].split(" (at ")[0][:120] + (" " + res["why"].rsplit(" (at ", 1)[1]
                                                         if " (at " in res["why"] else "")
            whys[key] = whys.get(key, 0) + 1
            path = save_bug(corpus, target, data) if corpus is not None and whys[key] <= 3 else None
            bugs.append({"why": res["why"], "file": str(path) if path else None})
            if whys[key] == 1:
                log(f"BUG {res['why']}" + (f" -> {path}" if path else ""))
    counts["bug_kinds"] = whys
    return {"counts": counts, "bugs": bugs}


def replay(corpus: Path, timeout: float = 60.0) -> list:
    """Run every saved input again; ``[(file, result)]``."""
    out = []
    preload()
    for p in sorted(corpus.glob("*")):
        target = p.name.split("-", 1)[0]
        if target in RUN and p.suffix == EXT[target]:
            out.append((p, run_one(target, p.read_bytes(), timeout=timeout)))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--target", choices=TARGETS, default="onnx")
    ap.add_argument("--seconds", type=float, default=60.0, help="how long to fuzz (default 60)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds one input may take before it is a hang")
    ap.add_argument("--corpus", default=str(CORPUS), help="where bug inputs are written (default tests/fuzz_corpus)")
    ap.add_argument("--no-save", action="store_true", help="do not write bug inputs")
    ap.add_argument("--replay", metavar="DIR", help="run the saved inputs of DIR instead of fuzzing")
    ap.add_argument("--json", help="write the counts and bugs here")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every input's result")
    a = ap.parse_args(argv)
    t0 = time.time()
    if a.replay:
        res = replay(Path(a.replay), a.timeout)
        for p, r in res:
            print(f"{r['kind']:8s} {p.name}  {r.get('why', '')}")
        bad = sum(r["kind"] == "bug" for _, r in res)
        print(f"{len(res)} inputs replayed, {bad} still bugs")
        return 1 if bad else 0
    out = fuzz(a.target, a.seconds, seed=a.seed, timeout=a.timeout,
               corpus=None if a.no_save else Path(a.corpus), verbose=a.verbose)
    c = out["counts"]
    print(f"{a.target}: {c['tried']} inputs in {time.time() - t0:.0f} s: {c['refused']} refused, "
          f"{c['accepted']} accepted, {c['bug']} bugs")
    for why, n in sorted(c["bug_kinds"].items(), key=lambda x: -x[1]):
        print(f"  {n:5d}  {why}")
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1))
    return 1 if c["bug"] else 0


if __name__ == "__main__":
    sys.exit(main())
