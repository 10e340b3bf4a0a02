"""A channel selector of your own (the seam: evoprune/pruning/importance.py): a criterion ``prune --selector``
applies to each unit in turn, in place of the GA.

    evoprune prune --checkpoint model.pt --target-macs 0.5 --data mini-cifar10 \
        --selector examples/custom_selector.py:l2_norm --out runs/l2

A selector is ``fn(model, space, unit, k, batches=None, rng=None) -> bool mask [n]`` with exactly ``k`` kept.
``make_selector`` turns an importance (one score per channel, higher = keep) into one, handling coupled units
(a residual stage sums its producers' scores) and units feeding grouped convs (top k/g per block).
"""
import numpy as np

from evoprune.pruning.importance import make_selector
from evoprune.pruning.space import CONV_OUT


def l2_importance(model, space, unit, data=None, rng=None):
    """L2 norm of each channel's filters, summed over the unit's producer convs."""
    u = space.unit(unit) if isinstance(unit, str) else unit
    modules = dict(model.named_modules())
    score = np.zeros(u.channels)
    for mem in u.members:
        if mem.kind == CONV_OUT:
            w = modules[mem.name].weight.detach().cpu().numpy()
            np.add.at(score, mem.channel, np.sqrt((w[mem.index] ** 2).reshape(len(mem.index), -1).sum(1)))
    return score


l2_norm = make_selector(l2_importance, "l2")
