"""Structural pruning: prunable units (``PruningSpace``), masks -> smaller models, exact cost model, importance."""
from .apply import SoftMask, apply, masks_to_pruned, shrink_to, soft_apply
from .cost import CostModel
from .space import Consumer, Member, PruningSpace, Unit

__all__ = ["PruningSpace", "Unit", "Consumer", "Member", "apply", "soft_apply", "SoftMask", "shrink_to",
           "masks_to_pruned", "CostModel"]
