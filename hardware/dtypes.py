"""Number formats: the one table of data types, their sizes and Poplar-style aliases.

Every layer asks this table what a dtype costs in bytes (the op graph of a model, the
compiler's graph and memory planner, the views).  ``DEVICE_DTYPES`` are the types a
compiled graph holds on the tiles; a model may also name host-only types (fp64, int64,
bf16, uint8) that the lowering converts.

>>> DTYPE_BYTES["fp16"], DTYPE_BYTES["bf16"], nbytes("half")
(2, 2, 2)
"""
from __future__ import annotations

import numpy as np

#: bytes per element of every dtype a model or a graph may name (device types first: their
#: order gives the compact ids the compiler stores per edge)
DTYPE_BYTES = {"fp32": 4, "fp16": 2, "int32": 4, "int8": 1, "bool": 1,
               "bf16": 2, "fp64": 8, "int64": 8, "uint8": 1}
#: the dtypes a compiled graph holds on the tiles
DEVICE_DTYPES = ("fp32", "fp16", "int32", "int8", "bool")
#: floating-point dtypes (a model's float tensors take the run's --dtype when lowered)
FLOAT_DTYPES = ("fp32", "fp16", "bf16", "fp64")
ALIASES = {"float": "fp32", "float32": "fp32", "half": "fp16", "float16": "fp16",
           "int": "int32", "unsigned": "int32", "char": "int8"}
NUMPY = {"fp32": np.float32, "fp16": np.float16, "int32": np.int32, "int8": np.int8,
         "bool": np.bool_}
DTYPE_IDS = {name: i for i, name in enumerate(DEVICE_DTYPES)}
DTYPE_NAMES = list(DEVICE_DTYPES)


def canonical(dtype: str) -> str:
    """Return the canonical name of a device dtype ("float" -> "fp32").

    >>> canonical("half")
    'fp16'
    """
    d = ALIASES.get(str(dtype).lower(), str(dtype).lower())
    if d not in DEVICE_DTYPES:
        raise ValueError(f"unknown dtype {dtype!r} (known: {', '.join(DEVICE_DTYPES)}, "
                         f"or {', '.join(ALIASES)})")
    return d


def nbytes(dtype: str) -> int:
    """Bytes per element of a device dtype, aliases accepted."""
    return DTYPE_BYTES[canonical(dtype)]
