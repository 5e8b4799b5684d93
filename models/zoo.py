"""Built-in networks, written op by op with :class:`GraphBuilder`.

Every builder takes ``batch`` and ``dtype`` plus its own keyword options and
returns a forward :class:`OpGraph` whose parameter count follows from the
shapes alone:

============  ==============================================  ============
name          definition                                      params
============  ==============================================  ============
mnist-mlp     28x28 -> Flatten -> 784-256 ReLU -> 256-10       203,530
alexnet       torchvision ``alexnet``                          61,100,840
vgg16         torchvision ``vgg16`` (no BN)                    138,357,544
resnet50      torchvision ``resnet50`` (v1.5, stride in 3x3)   25,557,032
bert-base     BERT-base encoder + pooler + 2-way classifier    109,483,778
bert-large    BERT-large (24 x 1024, 16 heads), same layout    335,019,010
============  ==============================================  ============

The decoders (GPT-2, Llama-style, Mixtral-style) are built by :mod:`models.transformers`
and listed there.

BERT-base without its classifier (``num_labels=0``) has the standard
109,482,240 parameters (HF ``BertModel``: embeddings 23,837,184, 12 layers of
7,087,872, pooler 590,592). BatchNorm running statistics are ``state`` tensors,
not parameters.

BERT-large follows MLPerf's Graphcore configuration (``mlcommons/training_results_v1.0``,
``Graphcore/benchmarks/bert``): 24 layers, hidden 1024, 16 heads, intermediate 4096, a
vocabulary of 30,400 (30,522 padded down to a multiple of the tile-friendly 64 by the
submission), 512 positions and, by default, sequences of 512 tokens.  Its 335,019,010
parameters: embeddings 31,657,984 (word 31,129,600, position 524,288, token type 2,048,
LayerNorm 2,048), 24 layers of 12,596,224, pooler 1,049,600, classifier 2,050.
"""
from __future__ import annotations

import numpy as np

from .builder import GraphBuilder
from .errors import ModelError
from .tensor_parallel import check as tensor_parallel_check
from .tensor_parallel import vocab_rows
from .transformers import DECODERS


def mnist_mlp(batch=1, dtype="fp32", hidden=256, num_classes=10, image_size=28):
    """Two-layer perceptron on 28x28 digits: 784 -> ``hidden`` (ReLU) -> 10.  ``image_size=8``
    takes scikit-learn's 8x8 handwritten digits (64 -> 256 -> 10, 19,210 parameters)."""
    if int(image_size) < 1:
        raise ModelError(f"mnist-mlp: image_size must be a positive integer, got {image_size!r}")
    b = GraphBuilder("mnist-mlp", batch, dtype)
    x = b.input("input", (batch, 1, int(image_size), int(image_size)))
    x = b.op("Flatten", [x], dict(axis=1), name="flatten")
    x = b.linear(x, "fc1", hidden)
    x = b.op("Relu", [x], name="relu1")
    x = b.linear(x, "fc2", num_classes)
    return b.finish([x])


def alexnet(batch=1, dtype="fp32", num_classes=1000, image_size=224, hidden=4096, pooled=6, dropout=0.5):
    """torchvision AlexNet (``features.N`` / ``classifier.N`` layer names); ``hidden`` is the
    classifier's width and ``pooled`` the adaptive pool's output size (small test models);
    ``dropout`` the classifier's Dropout ratio (0 leaves them out)."""
    b = GraphBuilder("alexnet", batch, dtype)
    x = b.input("input", (batch, 3, image_size, image_size))
    spec = [("conv", 64, 11, 4, 2), ("relu",), ("pool",), ("conv", 192, 5, 1, 2), ("relu",),
            ("pool",), ("conv", 384, 3, 1, 1), ("relu",), ("conv", 256, 3, 1, 1), ("relu",),
            ("conv", 256, 3, 1, 1), ("relu",), ("pool",)]
    x = _features(b, x, spec)
    x = b.adaptive_avgpool(x, "avgpool", (pooled, pooled))
    x = b.op("Flatten", [x], dict(axis=1), name="flatten")
    x = _classifier(b, x, [("drop",), ("fc", hidden), ("relu",), ("drop",), ("fc", hidden),
                           ("relu",), ("fc", num_classes)], dropout)
    return b.finish([x])


def vgg16(batch=1, dtype="fp32", num_classes=1000, image_size=224, hidden=4096, pooled=7, dropout=0.5):
    """torchvision VGG-16 (configuration D, no batch norm); ``hidden`` is the classifier's
    width and ``pooled`` the adaptive pool's output size (small test models); ``dropout`` the
    classifier's Dropout ratio (0 leaves them out)."""
    b = GraphBuilder("vgg16", batch, dtype)
    x = b.input("input", (batch, 3, image_size, image_size))
    spec = []
    for v in (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
              512, 512, 512, "M"):
        spec += [("pool",)] if v == "M" else [("conv", v, 3, 1, 1), ("relu",)]
    x = _features(b, x, spec, pool=(2, 2))
    x = b.adaptive_avgpool(x, "avgpool", (pooled, pooled))
    x = b.op("Flatten", [x], dict(axis=1), name="flatten")
    x = _classifier(b, x, [("fc", hidden), ("relu",), ("drop",), ("fc", hidden), ("relu",),
                           ("drop",), ("fc", num_classes)], dropout)
    return b.finish([x])


def _features(b, x, spec, pool=(3, 2)):
    for i, s in enumerate(spec):
        name = f"features.{i}"
        if s[0] == "conv":
            x = b.conv(x, name, s[1], s[2], stride=s[3], pad=s[4])
        elif s[0] == "relu":
            x = b.op("Relu", [x], name=name)
        else:
            x = b.maxpool(x, name, *pool)
    return x


def _classifier(b, x, spec, dropout=0.5):
    for i, s in enumerate(spec):
        name = f"classifier.{i}"
        if s[0] == "fc":
            x = b.linear(x, name, s[1])
        elif s[0] == "relu":
            x = b.op("Relu", [x], name=name)
        elif dropout:
            x = b.op("Dropout", [x], dict(ratio=float(dropout)), name=name)
    return x


def resnet50(batch=1, dtype="fp32", num_classes=1000, image_size=224,
             layers=(3, 4, 6, 3)):
    """torchvision ResNet-50 (bottleneck v1.5). Each bottleneck is a block
    ``layerL.i`` of kind ``bottleneck``."""
    b = GraphBuilder("resnet50", batch, dtype)
    x = b.input("input", (batch, 3, image_size, image_size))
    x = b.conv(x, "conv1", 64, 7, stride=2, pad=3, bias=False)
    x = b.bn(x, "bn1")
    x = b.op("Relu", [x], name="relu")
    x = b.maxpool(x, "maxpool", 3, 2, pad=1)
    cin = 64
    for li, (n, width) in enumerate(zip(layers, (64, 128, 256, 512)), start=1):
        for i in range(n):
            stride = 2 if (i == 0 and li > 1) else 1
            p = f"layer{li}.{i}"
            with b.block(p, "bottleneck"):
                x = _bottleneck(b, x, p, cin, width, stride)
            cin = width * 4
    x = b.op("GlobalAveragePool", [x], name="avgpool")
    x = b.op("Flatten", [x], dict(axis=1), name="flatten")
    x = b.linear(x, "fc", num_classes)
    return b.finish([x])


def _bottleneck(b, x, p, cin, width, stride):
    out = width * 4
    y = b.conv(x, f"{p}.conv1", width, 1, bias=False)
    y = b.bn(y, f"{p}.bn1")
    y = b.op("Relu", [y], name=f"{p}.relu1")
    y = b.conv(y, f"{p}.conv2", width, 3, stride=stride, pad=1, bias=False)
    y = b.bn(y, f"{p}.bn2")
    y = b.op("Relu", [y], name=f"{p}.relu2")
    y = b.conv(y, f"{p}.conv3", out, 1, bias=False)
    y = b.bn(y, f"{p}.bn3")
    if stride != 1 or cin != out:
        x = b.conv(x, f"{p}.downsample.0", out, 1, stride=stride, bias=False)
        x = b.bn(x, f"{p}.downsample.1")
    y = b.op("Add", [y, x], name=f"{p}.add")
    return b.op("Relu", [y], name=f"{p}.relu3")


def bert(batch=1, dtype="fp32", layers=12, hidden=768, heads=12, intermediate=None,
         seq_len=128, vocab=30522, max_position=512, type_vocab=2, num_labels=2, tensor_parallel=1,
         uneven_heads=False, dropout=0.1, attention_dropout=None, name="bert-base"):
    """BERT encoder (HF ``BertForSequenceClassification`` layout).

    Inputs ``input_ids`` and ``token_type_ids`` (batch, seq_len) int64; no
    padding mask (every sequence is full length). Hidden states are kept as
    (batch * seq_len, hidden) so every linear layer is a Gemm; attention
    reshapes to (batch, heads, seq_len, head_dim). Each encoder layer is a block
    ``encoder.layer.i`` of kind ``bert_layer``. ``num_labels=0`` drops the
    classifier and outputs the pooled (batch, hidden) tensor.  ``tensor_parallel=K``: one
    chip's slice of the encoder (:mod:`models.tensor_parallel`).  ``dropout``: the ratio of
    every Dropout (HF's ``hidden_dropout_prob``, 0.1); 0 leaves them out.  ``attention_dropout``:
    the ratio of the Dropout on the attention probabilities (HF's ``attention_probs_dropout_prob``;
    None: ``dropout``); 0 leaves it out (MLPerf's Graphcore BERT ran ``no_attn_dropout``).
    """
    if hidden % heads:
        raise ModelError(f"{name}: hidden {hidden} is not a multiple of heads {heads}")
    if seq_len > max_position:
        raise ModelError(f"{name}: seq_len {seq_len} exceeds max_position {max_position}")
    inter = intermediate or 4 * hidden
    hd = hidden // heads
    tp, heads_tp, _, inter_tp = tensor_parallel_check(name, tensor_parallel, heads=heads, kv_heads=heads,
                                                      intermediate=inter, uneven=uneven_heads)
    b = GraphBuilder(name, batch, dtype)
    ids = b.input("input_ids", (batch, seq_len), "int64")
    types = b.input("token_type_ids", (batch, seq_len), "int64")
    pos = b.const("position_ids", np.arange(seq_len, dtype=np.int64))
    e = "embeddings"
    we = b.param(f"{e}.word_embeddings.weight", (vocab_rows(vocab, tp), hidden))    # vocabulary-parallel
    pe = b.param(f"{e}.position_embeddings.weight", (max_position, hidden))
    te = b.param(f"{e}.token_type_embeddings.weight", (type_vocab, hidden))
    x = b.op("Gather", [we, ids], dict(axis=0), name=f"{e}.word_embeddings")
    t = b.op("Gather", [te, types], dict(axis=0), name=f"{e}.token_type_embeddings")
    x = b.op("Add", [x, t], name=f"{e}.add_token_type", layer=f"{e}.add_token_type")
    p = b.op("Gather", [pe, pos], dict(axis=0), name=f"{e}.position_embeddings")
    x = b.op("Add", [x, p], name=f"{e}.add_position", layer=f"{e}.add_position")
    x = b.layernorm(x, f"{e}.LayerNorm")
    if dropout:
        x = b.op("Dropout", [x], dict(ratio=float(dropout)), name=f"{e}.dropout")
    x = b.reshape(x, f"{e}.flatten_tokens", (-1, hidden))
    scale = b.const("attention_scale", np.array(np.sqrt(hd), dtype=np.float32))
    for i in range(layers):
        p = f"encoder.layer.{i}"
        with b.block(p, "bert_layer"):
            x = _bert_layer(b, x, p, seq_len, hidden, heads_tp, hd, inter_tp, scale, float(dropout),
                            float(dropout if attention_dropout is None else attention_dropout))
    x = b.reshape(x, "pooler.unflatten_tokens", (-1, seq_len, hidden), layer="pooler")
    first = b.const("first_token", np.array(0, dtype=np.int64))
    x = b.op("Gather", [x, first], dict(axis=1), name="pooler.first_token", layer="pooler")
    x = b.linear(x, "pooler.dense", hidden)
    x = b.op("Tanh", [x], name="pooler.activation")
    if num_labels:
        if dropout:
            x = b.op("Dropout", [x], dict(ratio=float(dropout)), name="dropout")
        x = b.linear(x, "classifier", num_labels)
    return b.finish([x])


def _bert_layer(b, x, p, seq, hidden, heads, hd, inter, scale, drop=0.1, attn_drop=0.1):
    a = f"{p}.attention.self"
    q = b.linear(x, f"{a}.query", heads * hd)
    k = b.linear(x, f"{a}.key", heads * hd)
    v = b.linear(x, f"{a}.value", heads * hd)
    split = (-1, seq, heads, hd)
    q = b.reshape(q, f"{a}.split_heads_q", split, layer=a)
    q = b.op("Transpose", [q], dict(perm=[0, 2, 1, 3]), name=f"{a}.transpose_q", layer=a)
    k = b.reshape(k, f"{a}.split_heads_k", split, layer=a)
    k = b.op("Transpose", [k], dict(perm=[0, 2, 3, 1]), name=f"{a}.transpose_k", layer=a)
    v = b.reshape(v, f"{a}.split_heads_v", split, layer=a)
    v = b.op("Transpose", [v], dict(perm=[0, 2, 1, 3]), name=f"{a}.transpose_v", layer=a)
    s = b.op("MatMul", [q, k], name=f"{a}.scores", layer=a)
    s = b.op("Div", [s, scale], name=f"{a}.scale", layer=a)
    s = b.op("Softmax", [s], dict(axis=-1), name=f"{a}.softmax", layer=a)
    if attn_drop:
        s = b.op("Dropout", [s], dict(ratio=attn_drop), name=f"{a}.dropout", layer=a)
    c = b.op("MatMul", [s, v], name=f"{a}.context", layer=a)
    c = b.op("Transpose", [c], dict(perm=[0, 2, 1, 3]), name=f"{a}.transpose_context",
             layer=a)
    c = b.reshape(c, f"{a}.merge_heads", (-1, heads * hd), layer=a)
    o = f"{p}.attention.output"
    y = b.linear(c, f"{o}.dense", hidden)
    if drop:
        y = b.op("Dropout", [y], dict(ratio=drop), name=f"{o}.dropout", layer=f"{o}.dense")
    y = b.op("Add", [y, x], name=f"{o}.residual", layer=f"{o}.residual")
    x = b.layernorm(y, f"{o}.LayerNorm")
    h = b.linear(x, f"{p}.intermediate.dense", inter)
    h = b.op("Gelu", [h], name=f"{p}.intermediate.gelu")
    y = b.linear(h, f"{p}.output.dense", hidden)
    if drop:
        y = b.op("Dropout", [y], dict(ratio=drop), name=f"{p}.output.dropout",
                 layer=f"{p}.output.dense")
    y = b.op("Add", [y, x], name=f"{p}.output.residual")
    return b.layernorm(y, f"{p}.output.LayerNorm")


def bert_large(batch=1, dtype="fp32", layers=24, hidden=1024, heads=16, intermediate=4096,
               seq_len=512, vocab=30400, max_position=512, type_vocab=2, num_labels=2, tensor_parallel=1,
               uneven_heads=False, dropout=0.1, attention_dropout=None):
    """BERT-large as in MLPerf's Graphcore configuration (see the module docstring); the
    layout of :func:`bert`, with 512-token sequences by default."""
    return bert(batch=batch, dtype=dtype, layers=layers, hidden=hidden, heads=heads,
                intermediate=intermediate, seq_len=seq_len, vocab=vocab, max_position=max_position,
                type_vocab=type_vocab, num_labels=num_labels, tensor_parallel=tensor_parallel,
                uneven_heads=uneven_heads, dropout=dropout, attention_dropout=attention_dropout,
                name="bert-large")


#: name -> builder function
BUILDERS = {
    "mnist-mlp": mnist_mlp,
    "alexnet": alexnet,
    "vgg16": vgg16,
    "resnet50": resnet50,
    "bert-base": bert,
    "bert-large": bert_large,
    **DECODERS,      # gpt2, gpt2-medium/-large/-xl, llama-7b, llama-tiny, mixtral-8x7b, mixtral-tiny
}
