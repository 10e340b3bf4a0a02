"""Structural pruning: prunable units (``PruningSpace``), masks -> smaller models, exact cost model, importance.

Importing this package registers the channel selectors ``l1``, ``bn``, ``taylor``, ``random`` and ``thinet`` in
:data:`evoprune.registry.SELECTORS`.
"""
from .apply import SoftMask, apply, consumer_multipliers, masks_to_pruned, shrink_to, soft_apply
from .cost import CostModel, flop_counter_macs, model_params
from .greedy import greedy_removal, select_thinet
from .importance import IMPORTANCE, keep_mask
from .latency import measure_latency
from .space import Consumer, Member, PruningSpace, Unit

__all__ = ["PruningSpace", "Unit", "Consumer", "Member", "apply", "soft_apply", "SoftMask", "consumer_multipliers",
           "shrink_to", "masks_to_pruned", "CostModel", "flop_counter_macs", "model_params", "IMPORTANCE",
           "keep_mask", "measure_latency", "greedy_removal", "select_thinet"]
