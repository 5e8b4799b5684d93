"""Data types known to the graph, their sizes, and Poplar-style aliases."""
from __future__ import annotations

import numpy as np

DTYPE_BYTES = {"fp32": 4, "fp16": 2, "int32": 4, "int8": 1, "bool": 1}
ALIASES = {"float": "fp32", "float32": "fp32", "half": "fp16", "float16": "fp16",
           "int": "int32", "unsigned": "int32", "char": "int8"}
NUMPY = {"fp32": np.float32, "fp16": np.float16, "int32": np.int32, "int8": np.int8,
         "bool": np.bool_}
DTYPE_IDS = {name: i for i, name in enumerate(DTYPE_BYTES)}
DTYPE_NAMES = list(DTYPE_BYTES)


def canonical(dtype: str) -> str:
    """Return the canonical name of a dtype ("float" -> "fp32").

    >>> canonical("half")
    'fp16'
    """
    d = ALIASES.get(str(dtype).lower(), str(dtype).lower())
    if d not in DTYPE_BYTES:
        raise ValueError(f"unknown dtype {dtype!r} (known: {', '.join(DTYPE_BYTES)}, "
                         f"or {', '.join(ALIASES)})")
    return d


def nbytes(dtype: str) -> int:
    return DTYPE_BYTES[canonical(dtype)]
