"""A fitness of your own (the seam: evoprune/fitness/base.py), scoring a whole population in one tensor operation.

    evoprune prune --checkpoint model.pt --target-macs 0.5 --data mini-cifar10 \
        --fitness examples/custom_evaluator.py:LostWeight --out runs/lost-weight

An evaluator scores candidate masks of one unit: ``evaluate(masks [P, n] bool) -> [P, n_obj]`` with ``objectives``
and DEAP ``weights``; ``from_space(space, unit, calib, model=..., **options)`` builds it for each unit the
pipeline prunes. This one is a data-free proxy: the share of the consumers' input-weight mass (|W| summed over
the weights that read each channel) that a mask removes -- cheaper than the stage-1 reconstruction error and
blind to the data, a baseline for it.
"""
import torch

from evoprune.fitness import Evaluator, check_masks, consumers_of


class LostWeight(Evaluator):
    name = "lost-weight"
    objectives = ("lost_weight",)
    weights = (-1.0,)

    def __init__(self, mass: torch.Tensor) -> None:
        self.mass = mass / mass.sum()  # [n]: each channel's share of the weights its consumers read it with
        self.n = int(mass.numel())

    @classmethod
    def from_space(cls, space, unit, calib, model=None, **options):
        mass = 0
        for c in consumers_of(space, unit, model):
            w = c.module.weight.detach().abs().double()
            w = w.flatten(2).sum(2) if w.dim() > 2 else w  # [out, in]: conv kernels summed
            if c.module.__class__.__name__ == "Conv2d" and c.module.groups != 1:
                raise ValueError("grouped-conv consumers are not handled by this example")
            mass = mass + w.sum(0)[c.index].sum(1)  # [n]: over every input position of each channel
        return cls(mass.cpu())

    def evaluate(self, masks):
        m = check_masks(masks, self.n)
        return ((~m).double() @ self.mass)[:, None]  # one matrix-vector product for the population
