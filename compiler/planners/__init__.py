"""The planner registry: one planner per op family, all with the same interface.

Every family lives in its own module of this package and implements
:class:`~compiler.planners.base.Planner` (``options``, ``estimate``, ``lower``);
:func:`~compiler.planners.base.choose` picks an option.  This module imports
them all and builds :data:`PLANNERS` (family -> planner), the one place
compiler/lower.py looks a planner up.  Adding a family: a module with a class
like its siblings, one line below.

==============  ===========================================================
module          family (planner)
==============  ===========================================================
``conv``        conv (ConvPlanner, with :class:`~.conv.ConvShape`)
``matmul``      matmul (MatMulPlanner; also ConvGradWeight)
``elementwise`` elementwise (ElementwisePlanner)
``pool``        pool (PoolPlanner)
``reduce``      reduce (ReducePlanner)
``norm``        norm (NormPlanner)
``softmax``     softmax (SoftmaxPlanner)
``loss``        loss (LossPlanner)
``optimizer``   optimizer (OptimizerPlanner)
``gather``      gather (GatherPlanner, behind ``sparse.GatherDispatch``)
``sparse``      the sparse / conditional op types of family gather
``reshape``     reshape (ReshapePlanner)
``concat``      concat (ConcatPlanner)
``indexed``     indexed (IndexedPlanner): any op, rank or layout through index maps; also the
                cases of other families their planner would not compute exactly
==============  ===========================================================

``base`` holds the interface and shared helpers, ``chunking`` the output chunks
that follow a mapping, ``cost`` what estimates are made of (the codelet table's
cycle functions and the one exchange estimate).
"""
from __future__ import annotations

from .base import LoweringError, Planner, add_by_signature, choose, pow2_upto, spread, unique_rows
from .chunking import chunks, per_channel
from .concat import ConcatPlanner
from .conv import ConvPlanner, ConvShape
from .cost import (CONV_CODELET, MATMUL_CODELET, METHODS, codelet_cycles, compute_phase_cycles,
                   contraction_cycles, exchange_cycles)
from .elementwise import ElementwisePlanner
from .gather import GatherPlanner
from .indexed import IndexedPlanner, takes as indexed_takes
from .loss import LossPlanner
from .matmul import MatMulPlanner
from .norm import NormPlanner
from .optimizer import OptimizerPlanner
from .pool import PoolPlanner
from .reduce import ReducePlanner
from .reshape import ReshapePlanner
from .softmax import SoftmaxPlanner
from .sparse import SPARSE_PLANNERS, GatherDispatch

#: family -> planner
PLANNERS = {p.family: p for p in (ConvPlanner(), MatMulPlanner(), ElementwisePlanner(), PoolPlanner(),
                                  ReducePlanner(), NormPlanner(), SoftmaxPlanner(), LossPlanner(),
                                  OptimizerPlanner(), GatherDispatch(GatherPlanner()), ReshapePlanner(),
                                  ConcatPlanner(), IndexedPlanner())}

__all__ = ["PLANNERS", "LoweringError", "Planner", "choose", "spread", "pow2_upto", "unique_rows",
           "add_by_signature", "chunks", "per_channel", "codelet_cycles", "compute_phase_cycles",
           "contraction_cycles", "exchange_cycles", "METHODS", "CONV_CODELET", "MATMUL_CODELET",
           "ConvPlanner", "ConvShape", "MatMulPlanner", "ElementwisePlanner", "PoolPlanner", "ReducePlanner",
           "NormPlanner", "SoftmaxPlanner", "LossPlanner", "OptimizerPlanner", "GatherPlanner",
           "GatherDispatch", "SPARSE_PLANNERS", "ReshapePlanner", "ConcatPlanner", "IndexedPlanner", "indexed_takes"]
