"""Lower an op graph (models/) into a graph of vertices and a program.

``lower(opgraph, chip)`` allocates every network tensor in the graph's
memory (parameters and optimizer state spread linearly over the tiles,
activations where the vertices that produce them run), asks each op's
family planner (the registry in compiler/planners/) for the cheapest split, and builds the
program: host streams in, one ``Execute`` per compute set in op order, host
streams out.  In inference graphs a block that repeats with identical shapes
(ResNet bottlenecks, BERT layers) is lowered once as a graph function and
called for every repetition, with its inputs and weights copied in; a block
that writes its own state in place (a decoder layer's KV cache) leaves the
ops on that state in the caller (:meth:`Lowering._state_parts`).

    >>> from models.opgraph import OpGraph
    >>> from hardware.chips import gc2
    >>> g = OpGraph("mlp")
    >>> _ = g.add_tensor("x", (4, 64), kind="input"); _ = g.add_tensor("w", (64, 32), kind="param")
    >>> _ = g.add_tensor("y", (4, 32)); _ = g.add_tensor("z", (4, 32))
    >>> _ = g.add_op("fc", "MatMul", ["x", "w"], ["y"], family="matmul", flops=2 * 4 * 64 * 32)
    >>> _ = g.add_op("relu", "Relu", ["y"], ["z"], family="elementwise", flops=128)
    >>> g.outputs.append("z")
    >>> low = lower(g, gc2)
    >>> low.graph.num_vertices > 0, [type(p).__name__ for p in low.program.children][:2]
    (True, ['Copy', 'Execute'])
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from hardware.dtypes import FLOAT_DTYPES as FLOAT, canonical
from . import hostmem
from .graph import Graph
from .kvcache import _logical, _positions
from .layout import Act, channel_group, row_major_4d
from .partition import legalise
from .planners import PLANNERS, LoweringError, choose, indexed_takes
from .program import Call, Copy, Execute, Sequence



@dataclass
class Lowered:
    graph: Graph
    program: Sequence
    opgraph: object
    acts: dict
    plans: dict                     # op name -> chosen option
    op_compute_sets: dict           # op name -> [compute set ids]
    functions: dict = field(default_factory=dict)   # block_type -> Function
    calls: dict = field(default_factory=dict)       # block_type -> number of calls
    dtype: str = "fp32"
    partials: str = "fp32"
    host_layout: dict = field(default_factory=dict)   # tensor -> how host data maps to storage order
    op_function: dict = field(default_factory=dict)   # inference: op name -> the function whose body holds it

    def opgraph_is_training(self) -> bool:
        return any(self.opgraph.op(o)["phase"] != "fwd" for o in self.opgraph.graph.nodes)


class Lowering:
    def __init__(self, opg, chip, *, dtype="fp32", partials=None, available_memory_proportion=0.6,
                 ipus=1, use_functions=True, fuse=True, exact=False, functional=False):
        self.opg = opg
        # exact=True (functional training): every op through the index-mapped lowering, whose
        # vertices compute the op's values; an op it does not compute exactly is refused by name
        self.exact = bool(exact)
        # functional=True (simulator/onnx_backend.py: a program run for its values): the ops whose
        # family planner stands in for their cost without computing their values
        # (RMSNormalization's norm planner) take the index-mapped lowering, which does
        self.functional = bool(functional) or self.exact
        self.chip = chip
        self.dtype = canonical(dtype) if dtype != "int8" else "int8"
        self.partials = canonical(partials or ("fp32" if self.dtype != "fp32" else "fp32"))
        if self.dtype == "fp32":
            self.partials = "fp32"
        self.available_memory_proportion = float(available_memory_proportion)
        self.ipus = int(ipus)
        target = chip if ipus == 1 else _MultiChip(chip, ipus)
        self.graph = Graph(target, name=opg.name)
        self.tiles = self.graph.num_tiles
        self.acts: dict[str, Act] = {}
        self.training = any(self.opg.op(o)["phase"] != "fwd" for o in opg.graph.nodes)
        self.use_functions = use_functions
        self._int_cache = {}
        self.host_layout = {}     # tensor name -> (kind, info): how host arrays map to storage order
        self.derived_of_op = {}   # op name -> [(tag, act, recipe)]: host-computed weights it reads
        self._derived_args = None   # the function whose body is being lowered (its derived weights are arguments)
        self._lazy_args = None      # (function, its own parameters, {parameter: argument}) while its body is lowered
        # 4-D tensors that no image op touches: row-major (attention's heads, scores), not
        # channel-grouped images (compiler/layout.py)
        self.row_major = row_major_4d(opg)
        self.fusion = self._plan_fusion() if fuse else {}   # producer op -> [unary ops fused into it]
        self.fused_away = {u: p for p, us in self.fusion.items() for u in us}

    FUSABLE = {"Relu": "relu", "Sigmoid": "sigmoid", "Tanh": "tanh", "Exp": "exp"}

    def _plan_fusion(self):
        """Kernel fusion: a unary element-wise op that is the only reader of an element-wise
        or normalisation op's output is applied by the producer's vertices (one superstep
        instead of two).  Producer and consumer must be in the same block and phase."""
        opg = self.opg
        readers = {}
        for n in opg.graph.nodes:
            for t in opg.op(n)["inputs"]:
                readers.setdefault(t, []).append(n)
        fusion = {}
        for n in opg.ops():
            d = opg.op(n)
            if d["op"] not in self.FUSABLE or len(d["inputs"]) != 1:
                continue
            t = d["inputs"][0]
            p = opg.tensors[t].producer
            if p is None or readers.get(t) != [n] or t in opg.outputs:
                continue
            pd = opg.op(p)
            if (pd["family"] not in ("elementwise", "norm") or pd["op"] in ("LRN", "Identity", "Dropout", "Cast")
                    or pd["op"].endswith("Grad") or len(pd["outputs"]) != 1 or pd["block"] != d["block"]
                    or pd["phase"] != d["phase"] or opg.tensors[t].shape != opg.tensors[d["outputs"][0]].shape
                    or indexed_takes(pd, self) or indexed_takes(d, self)):   # index-mapped vertices fuse nothing
                continue
            root = next((q for q, us in fusion.items() if p in us), p)
            fusion.setdefault(root, []).append(n)
        return fusion

    def fused(self, op, out) -> dict:
        """Params that make the vertices writing ``op``'s output also apply its fused ops."""
        ops = self.fusion.get(op["name"])
        if not ops or (out is not None and out.name != op["outputs"][0]):
            return {}
        return {"post": [self.FUSABLE[self.opg.op(u)["op"]] for u in ops]}

    # -- helpers the planners use ----------------------------------------------------------
    def tdtype(self, name):
        d = self.opg.tensors[name].dtype
        return self.dtype if d in FLOAT else "int32"

    def shape(self, name):
        return self.opg.tensors[name].shape

    def numel(self, name):
        return self.opg.tensors[name].size

    def out_shape(self, op, i):
        return self.opg.tensors[op["outputs"][i]].shape

    def group_for(self, c):
        return channel_group(int(c), self.dtype)

    def is_param(self, name):
        return self.opg.tensors[name].kind in ("param", "constant", "state")

    def is_state(self, name):
        return self.opg.tensors[name].kind == "state"

    def act(self, name) -> Act:
        lazy = self._lazy_args
        if lazy is not None and name in lazy[1]:    # an outlined block's own parameter: its argument,
            a = lazy[2].get(name)                   # made when the body first reads it
            if a is None:
                a = lazy[2][name] = self._clone_act(self.acts[name], f"{lazy[0]}/arg:{name}")
            return a
        a = self.acts.get(name)
        if a is None:
            t = self.opg.tensors.get(name)
            raise LoweringError(f"tensor {name!r} is used before it is produced"
                                + (f" (kind {t.kind})" if t else " (unknown tensor)"))
        return a

    def weights_by_name(self, name) -> Act:
        return self.act(name)

    def weights(self, op, i=1) -> Act:
        return self.act(op["inputs"][i])

    def weight_shape(self, op):
        return self.shape(op["inputs"][1])

    def compute_set(self, op, suffix):
        return self.graph.add_compute_set(f"{op['layer']}/{op['name']}/{suffix}", layer=op["layer"],
                                          op=op["name"], phase=op["phase"])

    def layout_group(self, name):
        """1 for a 4-D tensor stored row-major (not an image), else None (the default grouping)."""
        return 1 if name in self.row_major else None

    def view(self, act, name, shape=None) -> Act:
        """``act``'s storage seen as tensor ``name`` (its own shape unless ``shape``)."""
        return act.alias(name, self.shape(name) if shape is None else shape, group=self.layout_group(name))

    def new_act(self, op, i, group=None) -> Act:
        name = op["outputs"][i]
        t = self.opg.tensors[name]
        if name in self.row_major:
            group = 1
        if t.inplace_of and t.inplace_of in self.acts:
            a = self.view(self.acts[t.inplace_of], name, t.shape)
        else:
            a = Act.allocate(self.graph, name, t.shape, self.tdtype(name), group=group,
                             kind="activation" if t.kind not in ("grad",) else "gradient", op=op["name"])
        self.acts[name] = a
        return a

    def temp_act(self, op, tag, shape) -> Act:
        a = Act.allocate(self.graph, f"{op['name']}/{tag}", shape, self.dtype, kind="temporary", op=op["name"])
        self.graph.map_linearly(a.tensor)
        return a

    def alias(self, name, act):
        a = self.view(act, name)
        self.acts[name] = a

    def state_for(self, op, w, k):
        a = Act.allocate(self.graph, f"{op['name']}/state{k}", w.logical, self.dtype, kind="state", op=op["name"])
        return a

    def derived_weight(self, op, tag, shape, recipe):
        """A weight the host computes from other parameters (e.g. folded batch-norm).  In the
        body of an outlined inference block, the function's argument for it (each call copies
        its instance's in: :meth:`_host_derived`)."""
        if self._derived_args:
            a = Act.allocate(self.graph, f"{self._derived_args}/arg:{op['name']}/{tag}", shape, self.dtype,
                             kind="activation", op=op["name"])
            self.graph.map_linearly(a.tensor, grain=64)
        else:
            a = self._host_derived(op["name"], tag, shape, recipe)
        self.derived_of_op.setdefault(op["name"], []).append((tag, a, recipe))
        return a

    def _host_derived(self, opname, tag, shape, recipe):
        """The tensor the host writes a derived weight of op ``opname`` into."""
        name = f"{opname}/{tag}"
        a = Act.allocate(self.graph, name, shape, self.dtype, kind="weight", op=opname)
        self.graph.map_linearly(a.tensor, grain=64)
        self.acts[name] = a
        self.host_layout[name] = ("derived", recipe)
        return a

    def int_index(self, act):
        return act if act.dtype == "int32" else act

    # -- allocation of tensors that exist before the program runs --------------------------
    def _allocate_leaves(self):
        g = self.graph
        start_tile = 0
        for t in self.opg.tensors.values():
            if t.producer is not None or t.name in self.acts or t.inplace_of:
                continue
            kind = {"param": "weight", "state": "state", "constant": "constant", "input": "input"}.get(t.kind, "input")
            a = Act.allocate(g, t.name, t.shape, self.tdtype(t.name), group=self.layout_group(t.name), kind=kind)
            if t.data is not None and t.kind in ("param", "constant"):
                g.variables[-1].constant = None   # values are loaded by the host, not compiled in
            grain = max(a.g, 1) if t.kind == "input" else 64
            # each tensor starts where the previous one ended, so that the many small
            # tensors (biases, norm parameters) do not all land on tile 0
            g.map_linearly(a.tensor, grain=grain, tiles=(np.arange(self.tiles) + start_tile) % self.tiles)
            start_tile = (start_tile + -(-a.numel // grain)) % self.tiles
            self.acts[t.name] = a

    # -- the driver ------------------------------------------------------------------------
    def run(self) -> Lowered:
        g, opg = self.graph, self.opg
        self._allocate_leaves()
        prog = Sequence()
        inputs = [n for n in opg.tensors if opg.tensors[n].kind == "input" and n in self.acts]
        for n in inputs:
            a = self.acts[n]
            s = g.add_host_to_device_fifo(n, a.dtype, a.numel, buffers=2)
            prog.add(Copy(s, a.tensor))
        plans, op_cs = {}, {}
        functions, calls, templates = {}, {}, {}
        state_args = {}      # function -> {its template's state: (the function's argument, output)}
        param_args = {}      # function -> {its template's parameter: the function's argument}
        unread = {}          # function -> its template's parameters that its body does not read
        op_function = {}     # op name -> the function whose body it is lowered in
        ops = opg.ops()
        instances = {}       # inference: block_type -> its blocks; one that occurs once is inlined,
        if self.use_functions and not self.training:   # as PopART outlines only what repeats
            for o in ops:
                d = opg.op(o)
                if d.get("block_type"):
                    instances.setdefault(d["block_type"], set()).add(d.get("block"))
        i = 0
        while i < len(ops):
            d = opg.op(ops[i])
            bt = d.get("block_type") if self.use_functions else None
            if bt and not self.training and len(instances.get(bt, ())) < 2:
                bt = None
            if bt and self.training:
                i = self._training_block(ops, i, prog, plans, op_cs, functions, calls, templates)
                continue
            if self.training:
                self._lower_training_op(ops[i], prog, plans, op_cs, functions, calls, templates)
                i += 1
                continue
            if bt:
                j = i
                while j < len(ops) and opg.op(ops[j]).get("block") == d.get("block"):
                    j += 1
                parts = self._state_parts(ops[i:j])
                for k, (inline, seg) in enumerate(parts):
                    name = bt if len(parts) == 1 else f"{bt}#{k}"
                    if inline:            # the ops on this instance's own state: in the caller
                        for o in seg:
                            self._lower_op(o, prog, plans, op_cs)
                    elif name in templates and self._call_block(seg, templates[name], functions[name], prog,
                                                                state_args.get(name), param_args[name],
                                                                unread[name]):
                        calls[name] += 1
                    elif name not in templates:
                        writes = self._state_writes(seg) if self.STATE_ARGUMENTS else []
                        own = {src: self.act(src) for src, _, _ in writes}
                        args = {src: self._clone_act(a, f"{name}/arg:{src}") for src, a in own.items()}
                        self.acts.update(args)     # the function writes its own argument
                        # the function's parameters are arguments of its own, as PopART's subgraph
                        # inputs: every call, this first one included, copies its instance's in
                        # (one the body never reads, a batch-norm statistic folded on the host, is
                        # neither an argument nor copied)
                        params = self._own_params(seg, set(own))
                        self._lazy_args = (name, set(params), {})
                        self._derived_args = name
                        body = Sequence()
                        try:
                            for o in seg:
                                self._lower_op(o, body, plans, op_cs)
                        finally:
                            made = self._lazy_args[2]
                            self._lazy_args = self._derived_args = None
                        pargs = {p: made[p] for p in params if p in made}
                        mine = {p: self.act(p) for p in pargs}
                        f = g.add_function(body, name=name)
                        functions[name], templates[name], calls[name] = f, seg, 1
                        op_function.update(dict.fromkeys(seg, name))
                        param_args[name] = pargs
                        unread[name] = {p for p in params if p not in made}
                        for src, out, _ in writes:
                            self.acts[src] = own[src]
                            self.acts[out] = self.view(own[src], out)
                        state_args[name] = {src: (args[src], out) for src, out, _ in writes}
                        for src, out, attrs in writes:
                            prog.add(self._state_copy(own[src], args[src], attrs, written=False))
                        for p, a in pargs.items():
                            prog.add(Copy(mine[p].tensor.flatten()[: mine[p].numel], a.tensor.flatten()[: a.numel]))
                        for o in seg:     # this instance's host-computed weights, into the function's
                            for tag, arg, recipe in self.derived_of_op.get(o, []):
                                w = self._host_derived(o, tag, arg.logical, recipe)
                                prog.add(Copy(w.tensor.flatten()[: w.numel], arg.tensor.flatten()[: arg.numel]))
                        prog.add(Call(f))
                        for src, out, attrs in writes:
                            prog.add(self._state_copy(args[src], own[src], attrs, written=True))
                    else:                 # shaped like the function but wired differently: inline
                        for o in seg:
                            self._lower_op(o, prog, plans, op_cs)
                i = j
                continue
            self._lower_op(ops[i], prog, plans, op_cs)
            i += 1
        for n in opg.outputs:
            if n in self.acts:
                a = self.acts[n]
                s = g.add_device_to_host_fifo(n, a.dtype, a.numel, buffers=2)
                prog.add(Copy(a.tensor if a.tensor.numel == a.numel else a.tensor.flatten()[: a.numel], s))
        return Lowered(g, prog, opg, self.acts, plans, op_cs, functions, calls, self.dtype, self.partials,
                       self.host_layout, op_function)

    def _lower_op(self, name, prog, plans, op_cs):
        d = dict(self.opg.op(name))
        d["name"] = name
        if name in self.fused_away:   # applied by its producer's vertices: same storage, no compute set
            src = self.opg.op(name)["inputs"][0]
            self.acts[d["outputs"][0]] = self.view(self.act(src), d["outputs"][0])
            plans[name] = {"fused_into": self.fused_away[name]}
            op_cs[name] = []
            return
        fam = "matmul" if d["op"] == "ConvGradWeight" else d["family"]
        if indexed_takes(d, self):   # a case its family's planner would not compute exactly
            fam = "indexed"
        elif self.exact:
            raise LoweringError(f"op {name!r} ({d['op']}, layer {d['layer']!r}): not computed exactly in "
                                f"functional mode (its lowering is for timing and memory only)")
        planner = PLANNERS.get(fam)
        if planner is None:
            raise LoweringError(f"op {name!r} ({d['op']}): no planner for family {fam!r}")
        try:
            opt = choose(planner, d, self)
            css = planner.lower(d, opt, self)
        except LoweringError:
            raise
        except Exception as e:   # name the op, never a bare traceback from deep inside
            raise LoweringError(f"op {name!r} ({d['op']}, layer {d['layer']!r}): lowering failed: "
                                f"{type(e).__name__}: {e}") from e
        for o in d["outputs"]:
            if o not in self.acts:   # outputs a planner did not materialise (e.g. masks): map linearly
                a = Act.allocate(self.graph, o, self.shape(o), self.tdtype(o), group=self.layout_group(o),
                                 kind="activation", op=name)
                self.graph.map_linearly(a.tensor, grain=a.g)
                self.acts[o] = a
        plans[name] = opt
        op_cs[name] = [cs.id for cs in css]
        for cs in css:
            prog.add(Execute(cs))

    # -- training graphs: repeated blocks as functions with arguments and results -------------
    def _training_block(self, ops, i, prog, plans, op_cs, functions, calls, templates):
        """Lower the block starting at ``ops[i]`` of a training graph; returns the index after it.

        Training keeps every block's results (activations the backward pass reads, weight
        gradients), so the inference scheme (a later instance aliases the first one's
        tensors) does not apply.  As PopART's outlining does, a block (a forward block, or a
        block's recomputation and backward ops) whose ops, shapes and attributes equal an
        earlier one's becomes a graph function with argument and result tensors of its own:
        each call copies the block's inputs (activations, weights) into the arguments, runs
        the function, and copies the results that later ops read into tensors of the
        caller's.  Vertex code, vertex state and exchange code then exist once per kind of
        block; the copies cost exchange time, and the arguments and results memory while a
        call runs.  Weight updates (phase ``update``) are not part of the function: they run
        after it, on the caller's weights."""
        seg, deferred, j = self._blocks(ops, i)
        sig = self._segment_signature(seg)
        if self._repeats().get(sig, 0) < 2 or not self._outline(seg, sig, prog, functions, calls, templates, plans,
                                                                 op_cs):
            for name in ops[i:j]:      # a block that occurs once, or wired differently: op by op
                self._lower_training_op(name, prog, plans, op_cs, functions, calls, templates)
            return j
        for name in deferred:
            self._lower_op(name, prog, plans, op_cs)
        return j

    #: op families outlined one op at a time where their blocks are not (as TensorFlow's IPU
    #: backend caches identical convolutions and matmuls as one Poplar function each)
    OUTLINED_FAMILIES = ("conv", "matmul")

    def _lower_training_op(self, name, prog, plans, op_cs, functions, calls, templates):
        """One op of a training graph: a convolution or matmul whose op type, attributes and
        shapes occur again is a function of its own (its input, weights and output copied in
        and out per call, as TensorFlow's IPU backend caches identical convolutions: the
        forward and recomputed instances of a layer, and alike layers, share vertices,
        vertex state and exchange code); any other op is lowered in place."""
        d = self.opg.op(name)
        if self.use_functions and d["family"] in self.OUTLINED_FAMILIES:
            sig = self._segment_signature([name], prune=False)
            if self._op_repeats().get(sig, 0) >= 2 and self._outline([name], sig, prog, functions, calls, templates,
                                                                     plans, op_cs):
                return
        self._lower_op(name, prog, plans, op_cs)

    def _op_repeats(self):
        """How many times each convolution / matmul signature occurs in the training graph."""
        if not hasattr(self, "_op_sig_count"):
            self._op_sig_count = {}
            counts = self._repeats()      # the ops of blocks outlined whole are not counted
            in_blocks = {o for sig, seg in self._segments if counts[sig] >= 2 for o in seg}
            for o in self.opg.ops():
                if self.opg.op(o)["family"] in self.OUTLINED_FAMILIES and o not in in_blocks:
                    sig = self._segment_signature([o], prune=False)
                    if sig is not None:
                        self._op_sig_count[sig] = self._op_sig_count.get(sig, 0) + 1
        return self._op_sig_count

    def _outline(self, seg, sig, prog, functions, calls, templates, plans, op_cs) -> bool:
        """Lower ``seg`` as a call of the function of signature ``sig`` (made from this
        segment when it is the first): copies of its inputs into the function's arguments,
        the call, copies of its results into tensors of the caller's.  False (nothing
        added) when the segment is shaped like the function's but wired differently."""
        opg = self.opg
        ext, needed = self._segment_io(seg)
        if sig in templates:
            f, args, tseg, res_t = templates[sig]
            text, tneeded = self._segment_io(tseg)
            outs = [t for o in seg for t in opg.op(o)["outputs"]]
            touts = [t for o in tseg for t in opg.op(o)["outputs"]]
            if len(ext) != len(text) or any(touts[outs.index(t)] not in tneeded for t in needed):
                return False
            res = [res_t[tneeded.index(touts[outs.index(t)])] for t in needed]
            for x, tx in zip(ext, text):
                if tx in self.host_layout and x not in self.host_layout:
                    self.host_layout[x] = self.host_layout[tx]
        else:
            label = opg.op(seg[0])["block_type"] if len(seg) > 1 else f"{opg.op(seg[0])['op']}:{seg[0]}"
            saved = {x: self.acts[x] for x in ext}
            args = [self._clone_act(self.act(x), f"{label}/arg{k}:{x}") for k, x in enumerate(ext)]
            for x, a in zip(ext, args):
                self.acts[x] = a
            body = Sequence()
            for name in seg:
                self._lower_op(name, body, plans, op_cs)
            res = [self.acts[t] for t in needed]
            for x in ext:
                self.acts[x] = saved[x]
            f = self.graph.add_function(body, name=f"{label}#{len(templates)}")
            templates[sig] = (f, args, seg, res)
            functions[f.name], calls[f.name] = f, 0
        # copy in, call, copy the results out
        for x, a in zip(ext, args):
            src = self.act(x)
            prog.add(Copy(src.tensor.flatten()[: src.numel], a.tensor.flatten()[: a.numel], merge=True))
        prog.add(Call(f))
        calls[f.name] += 1
        for t, r in zip(needed, res):
            mine = self._clone_act(r, t, kind="gradient" if opg.tensors[t].kind == "grad" else "activation")
            prog.add(Copy(r.tensor.flatten()[: r.numel], mine.tensor.flatten()[: mine.numel], call_result=True,
                          merge=True))
            self.acts[t] = mine
        return True

    def _blocks(self, ops, i):
        """(segment, deferred update ops, index after) of the block starting at ``ops[i]``.

        A block's forward ops and its recomputation + backward ops are separate segments
        even where they follow each other (the last block before a pipeline stage's end,
        whose backward comes right after its forward in the stage's order), so that every
        instance of a block is cut the same way."""
        opg = self.opg
        blk = opg.op(ops[i])["block"]
        fwd = opg.op(ops[i])["phase"] == "fwd"
        j = i
        seg, deferred = [], []
        while j < len(ops) and opg.op(ops[j]).get("block") == blk:
            ph = opg.op(ops[j])["phase"]
            if ph != "update" and (ph == "fwd") != fwd:
                break
            (deferred if ph == "update" else seg).append(ops[j])
            j += 1
        return seg, deferred, j

    def _repeats(self):
        """How many times each segment signature occurs in the training graph."""
        if not hasattr(self, "_sig_count"):
            self._sig_count = {}
            self._segments = []     # (signature, segment) of every block segment that has one
            ops = self.opg.ops()
            i = 0
            while i < len(ops):
                if not self.opg.op(ops[i]).get("block_type"):
                    i += 1
                    continue
                seg, _, i = self._blocks(ops, i)
                sig = self._segment_signature(seg)
                if sig is not None:
                    self._sig_count[sig] = self._sig_count.get(sig, 0) + 1
                    self._segments.append((sig, seg))
        return self._sig_count

    #: attributes that name other ops (not part of what an op computes)
    NAME_ATTRS = ("forward",)

    def _segment_signature(self, seg, prune=True):
        """What must be equal for two segments to share a function (None: never outline it):
        op types, attributes, and every input and output shape, in order.

        Only a whole block's work is outlined: a segment that takes an activation from, or
        hands one to, another segment of its own block (a recomputation run apart from the
        block's backward, as checkpoints spanning several blocks make it) is not, since its
        calls would copy the block's inner activations in or out (PopART prunes outlining
        candidates whose copies cost too much, ``enableOutliningCopyCostPruning``)."""
        opg = self.opg
        if not seg:
            return None
        blk = opg.op(seg[0])["block"]
        inside = set(seg)
        if not prune:
            return self._shape_signature(seg)

        def inner(t):   # an activation of this block that no other block reads
            return all(opg.op(r)["block"] == blk for r in self._readers_of(t))

        for o in seg:
            for t in opg.op(o)["inputs"]:
                p = opg.tensors[t].producer
                if p is not None and p not in inside and opg.op(p)["block"] == blk and inner(t):
                    return None
            for t in opg.op(o)["outputs"]:
                if inner(t) and any(r not in inside and opg.op(r)["phase"] != "update"
                                    for r in self._readers_of(t)):
                    return None
        return self._shape_signature(seg)

    def _shape_signature(self, seg):
        opg = self.opg
        produced = {t for o in seg for t in opg.op(o)["outputs"]}
        rows = []
        for o in seg:
            d = opg.op(o)
            if o in self.derived_of_op or any(opg.tensors[t].inplace_of for t in d["outputs"]):
                return None
            rows.append((d["op"], repr(sorted((k, v) for k, v in d["attrs"].items() if k not in self.NAME_ATTRS)),
                         tuple(tuple(self.shape(t)) for t in d["inputs"]),
                         tuple(tuple(self.shape(t)) for t in d["outputs"]),
                         tuple(t in produced for t in d["inputs"])))
        return tuple(rows)

    def _readers_of(self, t) -> set:
        """The ops that read tensor ``t``."""
        if not hasattr(self, "_readers"):
            self._readers = {}
            for n in self.opg.graph.nodes:
                for x in self.opg.op(n)["inputs"]:
                    self._readers.setdefault(x, set()).add(n)
        return self._readers.get(t, set())

    def _segment_io(self, seg):
        """(external inputs, results read after it) of a segment, in order of first use.
        A result is an output that an op outside the segment reads, a graph output, or a
        weight gradient the graph reports (an activation's gradient that no op outside
        reads dies inside the function, as in the inline program)."""
        key = tuple(seg)
        cache = self.__dict__.setdefault("_io_cache", {})
        if key in cache:
            return cache[key]
        opg = self.opg
        inside = set(seg)
        outs = [t for o in seg for t in opg.op(o)["outputs"]]
        produced = set(outs)
        ext = list(dict.fromkeys(t for o in seg for t in opg.op(o)["inputs"] if t not in produced))
        later = set(opg.outputs) | {gr for t, gr in opg.grads.items() if opg.tensors[t].kind == "param"}
        needed = [t for t in outs if t in later or (self._readers_of(t) - inside)]
        cache[key] = (ext, needed)
        return ext, needed

    def _clone_act(self, a: Act, name, kind="activation") -> Act:
        """A new variable holding what ``a`` holds, mapped to the same tiles."""
        g = self.graph
        t = g.add_variable(a.dtype, (a.N, a.Cg, a.H, a.W, a.g), name, kind=kind)
        c = Act(name, t, a.logical, a.N, a.C, a.H, a.W, a.g, a.dtype, len(g.variables) - 1)
        runs = g.tile_map.runs(a.var)
        if runs is not None:
            st, tl = runs
            keep = st < a.numel
            g.tile_map.set_runs(c.var, st[keep], tl[keep])
        return c

    #: how an outlined inference block reaches its instance's own state (a KV cache): False, the
    #: ops on it stay in the caller (:meth:`_state_parts`); True, one function with an argument
    #: of its own, the instance's state copied into it whole before each call and the positions
    #: written copied back after (PopART's CopyModified); measured against each other in
    #: docs/transformers.md
    STATE_ARGUMENTS = False

    def _state_writes(self, seg) -> list:
        """``[(state, its in-place output, attrs)]`` of the ops of ``seg`` that write a state."""
        opg = self.opg
        out = []
        for o in seg:
            d = opg.op(o)
            for t in d["outputs"]:
                src = opg.tensors[t].inplace_of
                if src and opg.tensors[src].kind == "state":
                    out.append((src, t, d["attrs"]))
        return out

    def _state_copy(self, a, b, attrs, written):
        """Copy state ``a`` into ``b``: whole, or (``written``) the positions a ``KVCacheWrite``
        with ``attrs`` wrote."""
        if written and "layout" in attrs:
            axis = 2 if attrs["layout"] == "k" else 1
            p, n = int(attrs["position"]), int(attrs["tokens"])
            return Copy(_positions(_logical(self.graph, a), axis, p, p + n),
                        _positions(_logical(self.graph, b), axis, p, p + n))
        return Copy(a.tensor.flatten()[: a.numel], b.tensor.flatten()[: b.numel])

    def _state_parts(self, seg) -> list:
        """``[(inline, ops)]``: an inference block cut around the ops that touch its own state.

        A decoder layer's KV cache is a state tensor of each layer, written in place
        (``KVCacheWrite``) and, in a decode step, read by the attention.  A graph function's
        tensors are fixed (Poplar ``Function``: one program, called; a call passes nothing but
        the copies the caller makes), so a layer's cache cannot be the function's.  The ops
        from the first that writes or reads such a state to the last stay in the caller, one
        copy per layer, on that layer's own cache (``inline`` True); what comes before and
        after them is outlined as two functions (their inputs copied in per call, as any
        block's).  A prefill's middle is the two cache writes (its attention reads the new
        keys and values, not the cache); a decode step's is the writes and the attention
        against the cache.  A block that writes no state is one function (one part)."""
        if self.STATE_ARGUMENTS:
            return [(False, seg)]
        opg = self.opg
        writes = self._state_writes(seg)     # state read only (batch-norm statistics) is a weight
        stateful = {src for src, _, _ in writes} | {out for _, out, _ in writes}
        touch = [k for k, o in enumerate(seg) if stateful.intersection(opg.op(o)["inputs"] + opg.op(o)["outputs"])]
        if not touch:
            return [(False, seg)]
        a, b = touch[0], touch[-1] + 1
        return [(x, p) for x, p in ((False, seg[:a]), (True, seg[a:b]), (False, seg[b:])) if p]

    def _own_params(self, seg, exclude=()) -> list:
        """The parameters (weights, read-only state, constants) that ``seg`` reads and no op outside
        it reads: its instance's own, which its function takes as arguments.  One read elsewhere
        too (a table every layer shares) is the same tensor for every call: the function reads it."""
        inside = set(seg)
        ext, _ = self._segment_io(seg)
        return [t for t in ext if self.is_param(t) and t not in exclude and t in self.acts
                and not (self._readers_of(t) - inside)]

    def _call_block(self, seg, template, function, prog, state_args=None, param_args=None, unread=()):
        """Run another instance of a lowered block: copy its inputs in, call, alias outputs.
        ``param_args``: {the template's own parameter: the function's argument}, into which this
        instance's parameter is copied (none for those in ``unread``, which the function does not
        read: the host folds them into derived weights).  ``state_args``: {the template's state: (the function's
        argument, its in-place output)} (:attr:`STATE_ARGUMENTS`): this instance's state is copied
        into the argument, and the positions written back after the call."""
        state_args = state_args or {}
        param_args = param_args or {}
        opg = self.opg
        if len(seg) != len(template):
            return False
        pairs = []
        for a, b in zip(seg, template):
            da, db = opg.op(a), opg.op(b)
            if da["op"] != db["op"] or len(da["inputs"]) != len(db["inputs"]):
                return False
            pairs += list(zip(da["inputs"], db["inputs"])) + list(zip(da["outputs"], db["outputs"]))
        produced = {t for o in seg for t in opg.op(o)["outputs"]}
        if any(self.shape(x) != self.shape(y) for x, y in pairs):
            return False
        if any(x not in produced and self.is_param(y) and y not in param_args and y not in state_args
               and y not in unread and self.act(x).var != self.act(y).var for x, y in pairs):
            return False      # the function reads this parameter itself: another cannot be passed
        copies, seen = [], set()
        for x, y in pairs:
            if x in produced or x in seen:
                continue
            seen.add(x)
            if y in unread:
                continue
            ax, ay = self.act(x), self.act(y)
            if y in state_args:
                ay = state_args[y][0]
            elif y in param_args:
                ay = param_args[y]
            if y in self.host_layout and x not in self.host_layout:
                self.host_layout[x] = self.host_layout[y]   # copied bytes keep the template's layout
            if ax.var != ay.var:
                copies.append(Copy(ax.tensor.flatten()[: ax.numel], ay.tensor.flatten()[: ay.numel]))
        # host-computed weights (folded batch-norm) of this instance, copied like its parameters
        for a, b in zip(seg, template):
            params_a = [t for t in opg.op(a)["inputs"][1:] if self.is_param(t)]
            for tag, tact, (what, params_b, extra) in self.derived_of_op.get(b, []):
                mine = self._host_derived(a, tag, tact.logical, (what, params_a[:len(params_b)], extra))
                copies.append(Copy(mine.tensor.flatten()[: mine.numel], tact.tensor.flatten()[: tact.numel]))
        for c in copies:
            prog.add(c)
        prog.add(Call(function))
        for x, y in pairs:
            if x in produced:
                self.acts[x] = self.acts[y]
        for a, b in zip(seg, template) if state_args else ():   # this instance's state: the positions
            for (src, out, attrs), (tsrc, _, _) in zip(self._state_writes([a]), self._state_writes([b])):
                mine = self.act(src)
                self.acts[out] = self.view(mine, out)
                prog.add(self._state_copy(state_args[tsrc][0], mine, attrs, written=True))
        return True


class _MultiChip:
    """Several chips seen as one target of ``ipus x tiles`` tiles (sharded placement)."""

    def __init__(self, chip, ipus):
        self._chip = chip
        self.ipus = ipus

    def __getattr__(self, k):
        return getattr(self._chip, k)


def lower(opg, chip, **kw) -> Lowered:
    """Lower ``opg`` for ``chip`` (see :class:`Lowering` for the options).  Refuses first, with
    :class:`compiler.hostmem.HostMemoryError`, a graph whose estimated host memory exceeds the
    machine's (:mod:`compiler.hostmem`)."""
    hostmem.check(opg, outlined=kw.get("use_functions", True))
    if not kw.get("exact"):     # the index-mapped lowering computes a strided dX itself
        opg = legalise(opg)
    return Lowering(opg, chip, **kw).run()
