"""Fitness evaluators for channel masks of one unit: the paper's two-step fitness and its reference.

Registered in :data:`evoprune.registry.EVALUATORS` (a user evaluator is ``--fitness mymodule:MyEvaluator``):

==============  ====================================================================================
name            what it scores
==============  ====================================================================================
reconstruction  stage 1: ``(1-m)^T Q (1-m) / 1^T Q 1``, the consumers' BN-scaled output error (fast)
network         stage 2: held-out loss and accuracy after adaptive BN (slow; cached)
twostage        stage 1 for all, stage 2 for the top-k per generation; one combined scalar
naive           reference for stage 1: one masked forward pass per individual
==============  ====================================================================================

Build one for unit ``U`` of a model::

    space = PruningSpace(model)
    calib = CalibrationData.from_loaders(loaders, train_batches=4, held_out_batches=4)
    s1 = ReconstructionFitness.from_space(space, "features.34", calib)
    s2 = NetworkFitness.from_space(space, "features.34", calib)
    fit = TwoStage(s1, s2, top_k=5)          # or build_evaluator("twostage", space, "features.34", calib)
    fit.evaluate(masks)                      # masks: bool [P, n] -> [P, n_obj]
"""
from .base import (ConsumerSpec, Evaluator, as_consumers, build_evaluator, check_masks, consumers_of,
                   get_evaluator, mask_consumers)
from .calibration import CalibrationData, gram_matrix
from .naive import NaiveReconstruction
from .network import NetworkFitness, split_model
from .reconstruction import ReconstructionFitness
from .twostage import BIG, TwoStage

__all__ = ["ConsumerSpec", "Evaluator", "as_consumers", "consumers_of", "check_masks", "mask_consumers",
           "get_evaluator", "build_evaluator", "CalibrationData", "gram_matrix", "ReconstructionFitness",
           "NetworkFitness", "split_model", "TwoStage", "BIG", "NaiveReconstruction"]
from .refit_aware import RefitReconstructionFitness
