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
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from hardware.chips import VALUE_FIELDS, Chip, get_chip

MODES = ("shard", "pipeline", "replicate", "pipeline+replicate", "tensor", "pipeline+tensor", "expert",
         "pipeline+expert", "spread")
#: the modes that split each layer over a tensor-parallel group of chips (--tensor-parallel)
TENSOR_MODES = ("tensor", "pipeline+tensor")
#: the modes that spread a mixture of experts' experts over a group of chips (--expert-parallel)
EXPERT_MODES = ("expert", "pipeline+expert")
RECOMPUTE_MODES = ("none", "blocks", "sqrt", "all")
OFFLOADABLE = ("optimizer", "weights")
#: run configurations shipped with the package (``ipusim presets``), one TOML file each
PRESETS_DIR = Path(__file__).with_name("presets")


#: CHOSEN bounds: the engine simulates every micro-batch and every chip (the time grows with
#: them), so counts beyond any real run (MLPerf's BERT: 192 micro-batches, POD256: 256 chips)
#: are refused instead of running for hours
MAX_MICRO_BATCHES = 10_000
MAX_CHIPS = 4_096


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

    model: Any = _opt("mnist-mlp", "built-in model name (see `ipusim models`), an .onnx file or a Hugging "
                      "Face-style config.json", kind="positional")
    chip: Any = _opt("gc200", "preset (gc2, gc200, bow) or a chip .toml file")
    batch: int = _opt(1, "samples per replica per weight update (split into --micro-batches)")
    train: bool = _opt(False, "compile the training step (loss, backward, update)")
    optimizer: str = _opt("sgd", "training: the weight update", choices=("sgd", "adam", "lamb"))
    dtype: str = _opt("fp32", "weights and activations (int8: inference)", choices=("fp32", "fp16", "int8"))
    partials: str | None = _opt(None, "accumulator type of convolutions and matmuls (default: fp32)",
                                choices=("fp32", "fp16"))
    ipus: int = _opt(1, "number of chips")
    mode: str = _opt("shard", "how --ipus N chips are used: shard (layers split over the chips, run in turn), "
                     "pipeline, replicate, pipeline+replicate, tensor (transformers: heads and MLP features "
                     "split over the chips, Megatron-style), pipeline+tensor, expert (mixtures of experts: experts / N "
                     "whole experts per chip, tokens dispatched and combined by all-to-alls over the links, the "
                     "rest replicated with batch / N sequences per chip), pipeline+expert, or spread (one graph "
                     "over all their tiles)", choices=MODES)
    tensor_parallel: int | None = _opt(None, "tensor / pipeline+tensor: chips per tensor-parallel group (tensor: "
                                       "all --ipus; pipeline+tensor: default 2, --ipus / T pipeline stages)",
                                       metavar="T")
    expert_parallel: int | None = _opt(None, "expert / pipeline+expert: chips per expert-parallel group, each "
                                       "holding experts / X whole experts (expert: all --ipus; pipeline+expert: "
                                       "default 2, --ipus / X pipeline stages)", metavar="X")
    replicas: int | None = _opt(None, "replication: data-parallel copies (each all-reduces once per weight update)")
    micro_batches: int | None = _opt(None, "micro-batches each --batch is split into: on one chip, gradient "
                                     "accumulation over M micro-batches of batch/M; in a pipeline, M micro-batches "
                                     "through the stages (default: 1; pipeline: the largest divisor of the batch "
                                     "up to 2 x stages)", metavar="M")
    placement: str = _opt("auto", "pipeline stage placement", choices=("auto", "even"))
    schedule: str = _opt("1f1b", "pipeline schedule", choices=("1f1b", "gpipe"))
    recompute: str = _opt("none", "training: recompute forward activations before the backward pass "
                          "(docs/memory.md)", choices=RECOMPUTE_MODES)
    accumulate: int = _opt(1, "old spelling: --batch B --accumulate N is --batch B*N --micro-batches N "
                           "(N micro-batches of B, one update)", metavar="N")
    recompute_checkpoints: tuple = _opt((), "training: recompute from these layers' outputs (layer or block "
                                        "names, comma-separated): their activations are kept, each segment "
                                        "between two is recomputed before its backward pass, the last one is kept",
                                        metavar="LAYER,...", kind="list")
    layers_per_chip: tuple = _opt((), "pipeline / shard: repeated blocks (encoder layers, bottlenecks) per stage, "
                                  "e.g. 3,7,7,7; what comes before the first block goes with stage 0, what comes "
                                  "after the last with the last stage", metavar="N,...", kind="list")
    pipeline_splits: tuple = _opt((), "pipeline / shard: the layers (or blocks) after which a new stage starts, "
                                  "comma-separated (one fewer than the stages)", metavar="LAYER,...", kind="list")
    replicated_tensor_sharding: bool = _opt(False, "replication: split optimizer state and the weight update "
                                            "over the replicas (reduce-scatter the gradients, update 1/R each, "
                                            "all-gather the weights)")
    offload: tuple = _opt((), "keep optimizer state and / or weights in streaming memory (comma-separated)",
                          metavar="optimizer|weights", kind="list")
    fuse: bool = _opt(True, "fuse element-wise ops into their producers", flag="--no-fuse")
    functions: bool = _opt(True, "place repeated blocks once as graph functions (else inline them)",
                           flag="--no-functions")
    available_memory_proportion: Any = _opt(0.6, "share of a tile a convolution or matmul plan may use "
                                            "for its temporaries, in (0, 1]: one value, or one per pipeline "
                                            "stage (comma-separated)", metavar="P|P0,P1,...", kind="list")
    verify_suggestions: bool = _opt(False, "when it does not fit, recompile each suggestion instead of "
                                    "estimating it")
    suggest: bool = _opt(True, "when it does not fit, say what would", cli=False)
    model_kw: Mapping | None = _opt(None, "the built-in model's own options (image_size, layers...)", cli=False)
    seq_len: int | None = _opt(None, "transformers (BERT, GPT-2, Llama, Mixtral, config.json files): tokens per "
                               "sequence (default: the model's, 128 for most); the model option seq_len",
                               metavar="S")
    uneven_heads: bool = _opt(False, "tensor / pipeline+tensor: a --tensor-parallel that does not divide the "
                              "heads (GPT-2 XL's 25) splits them unevenly, the busiest chip compiled; the "
                              "model option uneven_heads")

    # -- validation ---------------------------------------------------------------------
    def __post_init__(self):
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 - normalising a frozen value
        for name in ("batch", "ipus", "accumulate"):
            set_(name, _int(name, getattr(self, name), 1))
        for name in ("replicas", "micro_batches", "seq_len", "tensor_parallel", "expert_parallel"):
            if getattr(self, name) is not None:
                set_(name, _int(name, getattr(self, name), 1))
        for name, hi in (("accumulate", MAX_MICRO_BATCHES), ("micro_batches", MAX_MICRO_BATCHES),
                         ("replicas", MAX_CHIPS), ("ipus", MAX_CHIPS)):
            v = getattr(self, name)
            if v is not None and v > hi:
                raise ConfigError(f"{name}: at most {hi:,} (each is simulated), got {v:,}")
        if self.accumulate > 1:     # the old spelling, same meaning: N micro-batches of --batch, one update
            if self.micro_batches is not None:
                raise ConfigError("accumulate: the old spelling of --micro-batches (--batch B --accumulate N "
                                  "is --batch B*N --micro-batches N); give one, not both")
            if self.ipus > 1 and self.mode == "shard":
                raise ConfigError(f"accumulate: --mode shard runs the whole batch through the chips in turn (no "
                                  f"accumulation); got {self.accumulate} (use --mode pipeline, or one chip)")
            set_("micro_batches", self.accumulate)
            set_("batch", self.batch * self.accumulate)
            set_("accumulate", 1)
        if self.model_kw is not None and not isinstance(self.model_kw, Mapping):
            raise ConfigError(f"model_kw: must be a table of the model's options, got {self.model_kw!r}")
        if self.seq_len is not None:      # the model option, given as a run option
            kw = dict(self.model_kw or {})
            if kw.get("seq_len", self.seq_len) != self.seq_len:
                raise ConfigError(f"seq_len: {self.seq_len} contradicts the model option seq_len {kw['seq_len']}")
            set_("model_kw", kw | {"seq_len": self.seq_len})
        if self.uneven_heads is True:     # the model option, given as a run option
            set_("model_kw", dict(self.model_kw or {}) | {"uneven_heads": True})
        if self.recompute in (None, False):
            set_("recompute", "none")
        for f in dataclasses.fields(self):
            ch = f.metadata.get("choices")
            v = getattr(self, f.name)
            if ch and v is not None and v not in ch:
                raise ConfigError(f"{f.name}: {v!r} is not one of {', '.join(map(str, ch))}")
        for name in ("train", "fuse", "functions", "verify_suggestions", "suggest", "replicated_tensor_sharding",
                     "uneven_heads"):
            v = getattr(self, name)
            if not isinstance(v, bool):
                raise ConfigError(f"{name}: must be true or false, got {v!r}")
        set_("available_memory_proportion", _proportion(self.available_memory_proportion))
        set_("offload", _offload(self.offload))
        set_("recompute_checkpoints", _names("recompute_checkpoints", self.recompute_checkpoints))
        set_("pipeline_splits", _names("pipeline_splits", self.pipeline_splits))
        set_("layers_per_chip", tuple(_int("layers_per_chip", v, 1)
                                      for v in _names("layers_per_chip", self.layers_per_chip)))
        if not (isinstance(self.chip, (str, Chip))):
            raise ConfigError(f"chip: must be a preset name, a .toml path or a Chip, got {self.chip!r}")
        if self.model is None or (isinstance(self.model, str) and not self.model):
            raise ConfigError("model: missing (a built-in name or an .onnx file)")
        if self.dtype == "int8" and self.train:
            raise ConfigError("dtype: int8 is for inference only (drop --train or use fp16)")
        if self.recompute_checkpoints:
            if not self.train:
                raise ConfigError("recompute_checkpoints: recomputation needs a training run (--train)")
            if self.recompute != "none":
                raise ConfigError(f"recompute_checkpoints: the checkpoints are the recomputation; drop "
                                  f"--recompute {self.recompute} (or drop the checkpoints)")
        if self.multichip:          # each chip compiles its own graph (simulator.multichip)
            for name in ("fuse", "verify_suggestions"):
                if getattr(self, name) != _DEFAULTS[name]:
                    raise ConfigError(f"{name}: not supported with --mode {self.mode} on --ipus {self.ipus} "
                                      f"(separate graphs per chip); use it on one chip or with --mode spread")
        if self.layers_per_chip and self.pipeline_splits:
            raise ConfigError("layers_per_chip: give the stages by block counts or by --pipeline-splits, not both")
        self.layout()

    # -- derived ------------------------------------------------------------------------
    @property
    def multichip(self) -> bool:
        """True when the chips run separate graphs (shard, pipeline, replicate): simulator.multichip."""
        return self.ipus > 1 and self.mode != "spread"

    @property
    def recompute_mode(self) -> str:
        """The recomputation that runs: ``"checkpoints"`` when checkpoints are named, else ``recompute``."""
        return "checkpoints" if self.recompute_checkpoints else self.recompute

    @property
    def micro_batch(self) -> int:
        """Samples per micro-batch: the batch size each chip's graph is compiled for."""
        return self.batch // self.layout()[2]

    def proportion_of_stage(self, stage: int = 0) -> float:
        """The available memory proportion of pipeline stage ``stage`` (the one value if one is given)."""
        amp = self.available_memory_proportion
        return amp[stage] if isinstance(amp, tuple) else amp

    @property
    def tensor_degree(self) -> int:
        """Chips per tensor-parallel group: T of --mode tensor / pipeline+tensor, else 1."""
        if not self.multichip or self.mode not in TENSOR_MODES:
            return 1
        if self.mode == "tensor":
            return self.tensor_parallel or self.ipus
        return self.tensor_parallel or 2

    @property
    def expert_degree(self) -> int:
        """Chips per expert-parallel group: X of --mode expert / pipeline+expert, else 1."""
        if not self.multichip or self.mode not in EXPERT_MODES:
            return 1
        if self.mode == "expert":
            return self.expert_parallel or self.ipus
        return self.expert_parallel or 2

    def _check_group(self, option, given, degree, modes, mode_names, single, verb, what):
        """The chip-group options (``tensor_parallel``, ``expert_parallel``): given only with their
        modes; in the single-group mode the group is every chip; groups divide the chips; no replicas."""
        mode, ipus = self.mode, self.ipus
        flag = "--" + option.replace("_", "-")
        if given is not None and (not self.multichip or mode not in modes):
            raise ConfigError(f"{option}: needs --ipus N with --mode {mode_names}, got --ipus {ipus} --mode {mode}")
        if mode in modes and self.multichip:
            if self.replicas is not None:
                raise ConfigError(f"replicas: --mode {mode} has no replicas ({what} with "
                                  f"replication is not supported yet)")
            if mode == single and degree != ipus:
                raise ConfigError(f"{option}: --mode {single} {verb} all --ipus {ipus} chips, got {flag} "
                                  f"{degree} (use --mode pipeline+{single} for stages of {degree} chips)")
            if ipus % degree:
                raise ConfigError(f"{option}: {degree} chips per group do not divide --ipus {ipus}")

    def layout(self) -> tuple[int, int, int]:
        """``(stages, replicas, micro-batches)``: the chips of one replica in turn, the data-parallel
        copies, and the micro-batches each replica's ``batch`` is split into (one graph: ``(1, 1, M)``).
        Raises ConfigError for an impossible combination.  Cheap: nothing is loaded."""
        mode, ipus, batch = self.mode, self.ipus, self.batch
        T = self.tensor_degree
        X = self.expert_degree
        self._check_group("expert_parallel", self.expert_parallel, X, EXPERT_MODES, "expert or pipeline+expert",
                          "expert", "spreads the experts over", "expert parallelism")
        self._check_group("tensor_parallel", self.tensor_parallel, T, TENSOR_MODES, "tensor or pipeline+tensor",
                          "tensor", "splits every layer over", "tensor parallelism")
        if self.uneven_heads and (not self.multichip or mode not in TENSOR_MODES):
            raise ConfigError(f"uneven_heads: splits heads over tensor-parallel chips; needs --ipus N with --mode "
                              f"tensor or pipeline+tensor, got --ipus {ipus} --mode {mode}")
        if not self.multichip:     # one graph (over all the chips' tiles): M micro-batches accumulated
            S, R, M = 1, 1, self.micro_batches or 1
        elif mode == "shard":      # the whole batch through the chips in turn
            if (self.micro_batches or 1) > 1:
                raise ConfigError(f"micro_batches: --mode shard runs the whole batch through the chips in turn "
                                  f"(no micro-batches, no accumulation); got {self.micro_batches} (use --mode "
                                  f"pipeline, or one chip)")
            S, R, M = ipus, 1, 1
        elif mode == "pipeline":
            S, R = ipus, 1
            M = self.micro_batches or _divisor_up_to(batch, 2 * S)
        elif mode == "tensor":
            S, R, M = 1, 1, self.micro_batches or 1
        elif mode == "pipeline+tensor":
            S, R = ipus // T, 1
            M = self.micro_batches or _divisor_up_to(batch, 2 * S)
        elif mode == "expert":
            S, R, M = 1, 1, self.micro_batches or 1
        elif mode == "pipeline+expert":
            S, R = ipus // X, 1
            M = self.micro_batches or _divisor_up_to(batch // X if batch % X == 0 else batch, 2 * S)
        elif mode == "replicate":
            R = self.replicas or ipus
            S = ipus // R
            M = self.micro_batches or 1
        else:
            R = self.replicas or 2
            S = ipus // R
            M = self.micro_batches or _divisor_up_to(batch, 2 * S)
        if self.multichip and (S < 1 or S * R * T * X != ipus):
            raise ConfigError(f"replicas: --ipus {ipus} cannot hold {R} replicas of whole stages "
                              f"(the replicas must divide the {ipus} chips)")
        if batch % M:
            raise ConfigError(f"batch: {batch} samples per replica cannot be split into {M} micro-batches "
                              f"(--micro-batches must divide --batch)")
        if X > 1 and (batch // M) % X:
            raise ConfigError(f"batch: --mode {mode} gives each of its {X} chips per group its own sequences (the "
                              f"experts' all-to-alls exchange their tokens): a micro-batch of {batch // M} "
                              f"(--batch {batch} / {M} micro-batches) is not a multiple of --expert-parallel {X}")
        staged = self.multichip and S > 1
        for name, n, want in (("layers_per_chip", len(self.layers_per_chip), S),
                              ("pipeline_splits", len(self.pipeline_splits), S - 1)):
            if not n:
                continue
            if not staged:
                raise ConfigError(f"{name}: needs several stages (--ipus N with --mode shard, pipeline or "
                                  f"pipeline+replicate); this run has one graph per chip")
            if n != want:
                k = n if name == "layers_per_chip" else n + 1
                raise ConfigError(f"{name}: {n} value{'s' if n != 1 else ''} make{'s' if n == 1 else ''} {k} "
                                  f"stages, but --ipus {ipus} in mode {mode} has {S} chips per replica "
                                  f"({want} value{'s' if want != 1 else ''} needed)")
        amp = self.available_memory_proportion
        if isinstance(amp, tuple) and len(amp) != S:
            raise ConfigError(f"available_memory_proportion: {len(amp)} values for {S} chip"
                              f"{'s' if S > 1 else ''} per replica (give one value, or one per pipeline stage)")
        if self.replicated_tensor_sharding:
            if R < 2:
                raise ConfigError("replicated_tensor_sharding: needs replicas (--mode replicate or "
                                  "pipeline+replicate with 2 or more replicas)")
            if not self.train:
                raise ConfigError("replicated_tensor_sharding: shards the optimizer state; needs --train")
        return S, R, M

    def one_chip(self) -> "RunConfig":
        """The same run on one chip: one replica, its samples per update in the same micro-batches
        (accumulated), the first stage's memory proportion."""
        return self.replace(ipus=1, mode="shard", replicas=None, replicated_tensor_sharding=False, tensor_parallel=None,
                            expert_parallel=None,
                            uneven_heads=False,
                            layers_per_chip=(), pipeline_splits=(),
                            available_memory_proportion=self.proportion_of_stage(0),
                            micro_batches=self.layout()[2])

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
    def preset(cls, name: str, **overrides) -> "RunConfig":
        """A shipped run configuration by name (``ipusim presets``; or a preset ``.toml`` file), with
        ``overrides`` (option names or chip fields) on top:
        ``RunConfig.preset("mlperf-v1.0-resnet50-pod16", ipus=1, replicas=None)``."""
        return cls.from_dict(dict(load_preset(name)["run"]) | overrides, source=f"preset {name}")

    from_preset = preset

    @classmethod
    def from_dict(cls, d: Mapping, source: str = "") -> "RunConfig":
        """From plain values (a sweep point, the explorer's controls, JSON): keys are option names,
        or chip fields (``tiles``, ``sram_bytes_per_tile``...) that override the chip's values;
        ``preset``: a preset whose options the other keys override.

        ``source`` (a file, a point) is named in errors."""
        d = dict(d)
        where = f"{source}: " if source else ""
        if d.get("preset"):
            try:
                base = dict(load_preset(d.pop("preset"))["run"])
            except ConfigError as e:
                raise ConfigError(f"{where}{e.args[0]}") from None
            d = base | d
        d.pop("preset", None)
        chip_over = {k: d.pop(k) for k in list(d) if k in VALUE_FIELDS}
        bad = [k for k in d if k not in _NAMES]
        if bad:
            raise ConfigError(f"{where}{bad[0]}: unknown option (run options: {', '.join(_NAMES)}; "
                              f"or a chip field: {', '.join(VALUE_FIELDS)})")
        try:
            if chip_over:
                base = d.get("chip", "gc200")
                if not isinstance(base, (str, Chip)):
                    raise ConfigError(f"chip: must be a preset name, a .toml path or a Chip, got {base!r}")
                d["chip"] = get_chip(base).replace(**chip_over)
            return cls(**d)
        except ConfigError as e:
            raise ConfigError(f"{where}{e.args[0]}") from None

    @classmethod
    def from_args(cls, ns) -> "RunConfig":
        """From an argparse namespace whose attributes are named after the fields (the command line);
        a ``preset`` attribute names a preset that the other attributes override."""
        given = {n: getattr(ns, n) for n in _NAMES if hasattr(ns, n)}
        if getattr(ns, "preset", None):
            given = {k: v for k, v in given.items() if not (k == "model" and v is None)}
            return cls.from_dict(given | {"preset": ns.preset})
        return cls(**given)

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
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(RunConfig)}


def _divisor_up_to(n, k) -> int:
    """The largest divisor of ``n`` not above ``k`` (default micro-batches of a pipeline)."""
    return max(d for d in range(1, max(min(n, k), 1) + 1) if n % d == 0)


def _names(name, v) -> tuple:
    """A comma-separated string or a sequence as a tuple of non-empty stripped strings."""
    if v is None or v == "" or v == ():
        return ()
    if isinstance(v, str):
        v = v.split(",")
    elif isinstance(v, (int, float)) and not isinstance(v, bool):
        v = [v]
    try:
        items = [str(x).strip() for x in v]
    except TypeError:
        raise ConfigError(f"{name}: expected a comma-separated list, got {v!r}") from None
    if any(not x for x in items):
        raise ConfigError(f"{name}: an empty name in {v!r}")
    return tuple(items)


def _proportion(v):
    """One proportion as a float, or several (one per stage) as a tuple of floats; each in (0, 1]."""
    name = "available_memory_proportion"
    vals = _names(name, v) if isinstance(v, (str, list, tuple)) else (v,)
    if not vals:
        raise ConfigError(f"{name}: must be a number in (0, 1], got {v!r}")
    out = []
    for x in vals:
        try:
            f = float(x) if not isinstance(x, bool) else None
        except (TypeError, ValueError):
            f = None
        if f is None or not 0 < f <= 1:
            where = f" (value {len(out) + 1} of {len(vals)})" if len(vals) > 1 else ""
            raise ConfigError(f"{name}: must be a number in (0, 1], got {x!r}{where}")
        out.append(f)
    return out[0] if len(out) == 1 else tuple(out)


def _int(name, v, lo):
    """``v`` as an int >= ``lo`` (a whole float or a digit string accepted, a bool refused)."""
    if isinstance(v, str) and v.strip().isdecimal():
        try:
            v = int(v)
        except ValueError:      # digits int() does not take (superscripts...): refused below
            pass
    whole = (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, float) and v.is_integer())
    if not whole or v < lo:
        raise ConfigError(f"{name}: must be an integer >= {lo}, got {v!r}")
    return int(v)


def _offload(offload) -> tuple:
    if not offload:
        return ()
    if isinstance(offload, str):
        offload = [x.strip() for x in offload.replace("+", ",").split(",") if x.strip()]
    if not isinstance(offload, (list, tuple)):
        raise ConfigError(f"offload: expected a comma-separated list of {', '.join(OFFLOADABLE)}, got {offload!r}")
    offload = tuple(offload)
    bad = [x for x in offload if x not in OFFLOADABLE]
    if bad:
        raise ConfigError(f"offload: {bad[0]!r} is not one of {', '.join(OFFLOADABLE)}")
    return offload


# -- presets -----------------------------------------------------------------------------------
def list_presets() -> list[str]:
    """Names of the shipped run configurations (``simulator/presets/*.toml``)."""
    return sorted(p.stem for p in PRESETS_DIR.glob("*.toml"))


def load_preset(name) -> dict:
    """A preset file as a dict: ``run`` (the options), ``measured`` (what the real system did,
    for :mod:`simulator.validation`), ``title``, ``source``...; ``name`` is a shipped preset or
    a path to a ``.toml`` file written the same way."""
    name = str(name)
    path = PRESETS_DIR / f"{name}.toml"
    if not path.is_file():
        if name.endswith(".toml") and Path(name).is_file():
            path = Path(name)
        else:
            raise ConfigError(f"preset: {name!r} is not one of {', '.join(list_presets())} "
                              f"(or a .toml file; `ipusim presets` lists them)")
    try:
        with open(path, "rb") as f:
            d = tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"preset: {path}: {e}") from None
    if not isinstance(d.get("run"), dict):
        raise ConfigError(f"preset: {path} has no [run] table of options")
    d.setdefault("name", path.stem)
    d["path"] = str(path)
    return d
