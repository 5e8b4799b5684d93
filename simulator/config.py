"""One run configuration: every option of a run, declared once.

A :class:`RunConfig` is a frozen value.  Every front end builds one (the command line
from its flags, which come from these fields; sweeps and the explorer from a dict;
Python users directly) and hands it whole to :func:`simulator.run.run`.  Validation
happens here, once, and names the bad field.

>>> cfg = RunConfig(model="mnist-mlp", batch=4, train=True)
>>> cfg.replace(dtype="fp16").dtype, cfg.multichip
('fp16', False)
>>> RunConfig.from_dict({"model": "mnist-mlp", "ipus": 2, "mode": "pipeline", "batch": 8}).layout()
(2, 1, 4)
>>> RunConfig(batch=0)
Traceback (most recent call last):
...
simulator.config.ConfigError: batch: must be an integer >= 1, got 0
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

from hardware.chips import VALUE_FIELDS, Chip, get_chip

MODES = ("shard", "pipeline", "replicate", "pipeline+replicate", "spread")
RECOMPUTE_MODES = ("none", "blocks", "sqrt", "all")
OFFLOADABLE = ("optimizer", "weights")


class ConfigError(ValueError):
    """A run option is invalid; the message starts with the option's name."""


def _opt(default, help, *, choices=None, cli=True, flag=None, metavar=None, kind=None, **kw):
    """A field with what the command line needs to show it (help, choices, flag name)."""
    meta = {"help": help, "choices": choices, "cli": cli, "flag": flag, "metavar": metavar, "kind": kind}
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata=meta, **kw)
    return field(default=default, metadata=meta, **kw)


@dataclass(frozen=True)
class RunConfig:
    """Every option of a run (one chip or several)."""

    model: Any = _opt("mnist-mlp", "built-in model name (see `ipusim models`) or an .onnx file", kind="positional")
    chip: Any = _opt("gc200", "preset (gc2, gc200, bow) or a chip .toml file")
    batch: int = _opt(1, "samples per step (over all replicas)")
    train: bool = _opt(False, "compile the training step (loss, backward, update)")
    optimizer: str = _opt("sgd", "training: the weight update", choices=("sgd", "adam", "lamb"))
    dtype: str = _opt("fp32", "weights and activations (int8: inference)", choices=("fp32", "fp16", "int8"))
    partials: str | None = _opt(None, "accumulator type of convolutions and matmuls (default: fp32)",
                                choices=("fp32", "fp16"))
    ipus: int = _opt(1, "number of chips")
    mode: str = _opt("shard", "how --ipus N chips are used: shard (layers split over the chips, run in turn), "
                     "pipeline, replicate, pipeline+replicate, or spread (one graph over all their tiles)",
                     choices=MODES)
    replicas: int | None = _opt(None, "replication: data-parallel copies")
    micro_batches: int | None = _opt(None, "pipelining: micro-batches per step")
    placement: str = _opt("auto", "pipeline stage placement", choices=("auto", "even"))
    schedule: str = _opt("1f1b", "pipeline schedule", choices=("1f1b", "gpipe"))
    recompute: str = _opt("none", "training: recompute forward activations before the backward pass "
                          "(docs/memory.md)", choices=RECOMPUTE_MODES)
    accumulate: int = _opt(1, "training: accumulate gradients over N micro-batches of --batch, then update once",
                           metavar="N")
    offload: tuple = _opt((), "keep optimizer state and / or weights in streaming memory (comma-separated)",
                          metavar="optimizer|weights", kind="list")
    fuse: bool = _opt(True, "fuse element-wise ops into their producers", flag="--no-fuse")
    functions: bool = _opt(True, "place repeated blocks once as graph functions (else inline them)",
                           flag="--no-functions")
    available_memory_proportion: float = _opt(0.6, "share of a tile a convolution or matmul plan may use "
                                              "for its temporaries")
    verify_suggestions: bool = _opt(False, "when it does not fit, recompile each suggestion instead of "
                                    "estimating it")
    suggest: bool = _opt(True, "when it does not fit, say what would", cli=False)
    model_kw: Mapping | None = _opt(None, "the built-in model's own options (image_size, layers...)", cli=False)

    # -- validation ---------------------------------------------------------------------
    def __post_init__(self):
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 - normalising a frozen value
        for name in ("batch", "ipus", "accumulate"):
            set_(name, _int(name, getattr(self, name), 1))
        for name in ("replicas", "micro_batches"):
            if getattr(self, name) is not None:
                set_(name, _int(name, getattr(self, name), 1))
        if self.recompute in (None, False):
            set_("recompute", "none")
        for f in dataclasses.fields(self):
            ch = f.metadata.get("choices")
            v = getattr(self, f.name)
            if ch and v is not None and v not in ch:
                raise ConfigError(f"{f.name}: {v!r} is not one of {', '.join(map(str, ch))}")
        for name in ("train", "fuse", "functions", "verify_suggestions", "suggest"):
            v = getattr(self, name)
            if not isinstance(v, bool):
                raise ConfigError(f"{name}: must be true or false, got {v!r}")
        amp = self.available_memory_proportion
        if isinstance(amp, bool) or not isinstance(amp, (int, float)) or not 0 < amp <= 1:
            raise ConfigError(f"available_memory_proportion: must be a number in (0, 1], got {amp!r}")
        set_("available_memory_proportion", float(amp))
        set_("offload", _offload(self.offload))
        if not (isinstance(self.chip, (str, Chip))):
            raise ConfigError(f"chip: must be a preset name, a .toml path or a Chip, got {self.chip!r}")
        if self.model is None or (isinstance(self.model, str) and not self.model):
            raise ConfigError("model: missing (a built-in name or an .onnx file)")
        if self.dtype == "int8" and self.train:
            raise ConfigError("dtype: int8 is for inference only (drop --train or use fp16)")
        if self.multichip:
            self.layout()

    # -- derived ------------------------------------------------------------------------
    @property
    def multichip(self) -> bool:
        """True when the chips run separate graphs (shard, pipeline, replicate): simulator.multichip."""
        return self.ipus > 1 and self.mode != "spread"

    def layout(self) -> tuple[int, int, int]:
        """``(stages, replicas, micro-batches)`` of a run on several chips; raises ConfigError for an
        impossible combination.  Cheap: nothing is loaded."""
        mode, ipus, batch = self.mode, self.ipus, self.batch
        if mode == "spread" or ipus == 1:     # one graph (over all the chips' tiles)
            return 1, 1, 1
        if mode == "shard":
            S, R, M = ipus, 1, 1
        elif mode == "pipeline":
            S, R = ipus, 1
            M = self.micro_batches or min(batch, 2 * ipus)
        elif mode == "replicate":
            R = self.replicas or ipus
            S = ipus // R
            M = self.micro_batches or 1
        else:
            R = self.replicas or 2
            S = ipus // R
            M = self.micro_batches or min(max(batch // R, 1), 2 * S)
        if S < 1 or S * R != ipus:
            raise ConfigError(f"replicas: --ipus {ipus} cannot hold {R} replicas of whole stages "
                              f"(the replicas must divide the {ipus} chips)")
        if batch % (R * M):
            raise ConfigError(f"batch: {batch} is not divisible by replicas x micro-batches = {R} x {M}")
        return S, R, M

    def get_chip(self) -> Chip:
        """The chip as a :class:`hardware.chips.Chip` (a preset or TOML file is loaded)."""
        return get_chip(self.chip)

    # -- building -----------------------------------------------------------------------
    def replace(self, **changes) -> "RunConfig":
        """A copy with some options changed (validated again)."""
        bad = [k for k in changes if k not in _NAMES]
        if bad:
            raise ConfigError(f"{bad[0]}: unknown option (known: {', '.join(_NAMES)})")
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, d: Mapping, source: str = "") -> "RunConfig":
        """From plain values (a sweep point, the explorer's controls, JSON): keys are option names,
        or chip fields (``tiles``, ``sram_bytes_per_tile``...) that override the chip's values.

        ``source`` (a file, a point) is named in errors."""
        d = dict(d)
        where = f"{source}: " if source else ""
        chip_over = {k: d.pop(k) for k in list(d) if k in VALUE_FIELDS}
        bad = [k for k in d if k not in _NAMES]
        if bad:
            raise ConfigError(f"{where}{bad[0]}: unknown option (run options: {', '.join(_NAMES)}; "
                              f"or a chip field: {', '.join(VALUE_FIELDS)})")
        try:
            if chip_over:
                d["chip"] = get_chip(d.get("chip", "gc200")).replace(**chip_over)
            return cls(**d)
        except ConfigError as e:
            raise ConfigError(f"{where}{e.args[0]}") from None

    @classmethod
    def from_args(cls, ns) -> "RunConfig":
        """From an argparse namespace whose attributes are named after the fields (the command line)."""
        return cls(**{n: getattr(ns, n) for n in _NAMES if hasattr(ns, n)})

    def to_dict(self) -> dict:
        """Plain values (the chip by name), e.g. for a report or a cache key."""
        out = {}
        for n in _NAMES:
            v = getattr(self, n)
            if isinstance(v, Chip):
                v = v.name
            elif isinstance(v, tuple):
                v = list(v)
            elif not isinstance(v, (str, int, float, bool, type(None), dict)):
                v = getattr(v, "name", repr(v))
            out[n] = v
        return out


_NAMES = tuple(f.name for f in dataclasses.fields(RunConfig))


def _int(name, v, lo):
    """``v`` as an int >= ``lo`` (a whole float or a digit string accepted, a bool refused)."""
    if isinstance(v, str) and v.strip().isdigit():
        v = int(v)
    whole = (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, float) and v.is_integer())
    if not whole or v < lo:
        raise ConfigError(f"{name}: must be an integer >= {lo}, got {v!r}")
    return int(v)


def _offload(offload) -> tuple:
    if not offload:
        return ()
    if isinstance(offload, str):
        offload = [x for x in offload.replace("+", ",").split(",") if x]
    offload = tuple(offload)
    bad = [x for x in offload if x not in OFFLOADABLE]
    if bad:
        raise ConfigError(f"offload: {bad[0]!r} is not one of {', '.join(OFFLOADABLE)}")
    return offload
