"""TwoStage: the combined-fitness rule, top-k verification, the registry, and use inside a GA."""
import math
import textwrap

import numpy as np
import pytest
import torch

from evoprune.errors import EvopruneError
from evoprune.fitness import (BIG, CalibrationData, NetworkFitness, ReconstructionFitness, TwoStage,
                              build_evaluator, get_evaluator)
from evoprune.models import create_model
from evoprune.pruning.space import PruningSpace
from evoprune.registry import EVALUATORS


class Fake:
    """A stand-in stage: score = a fixed linear function of the mask; counts the masks it saw."""

    def __init__(self, n, seed, objectives=("e",), weights=(-1.0,)):
        self.n, self.objectives, self.weights, self.name = n, objectives, weights, "fake"
        self.w = torch.rand(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        self.seen = 0

    def evaluate(self, masks):
        self.seen += len(masks)
        s = (~masks).double() @ self.w
        return torch.stack([s] * len(self.objectives), 1)


def test_combined_rule_is_lexicographic():
    e1 = torch.tensor([0.1, 0.5, 0.01, 0.3, 0.2], dtype=torch.float64)
    e2 = torch.tensor([2.0, 1.0, math.nan, math.nan, math.inf], dtype=torch.float64)
    verified = torch.tensor([True, True, False, False, True])
    c = TwoStage.combine(e1, e2, verified)
    order = torch.argsort(c).tolist()
    # verified by stage-2 loss (1.0 before 2.0), then unverified by stage-1 error, a broken network last
    assert order == [1, 0, 2, 3, 4]
    assert float(c[1]) == 1.0 - BIG and float(c[2]) == 0.01 and float(c[4]) == BIG


def test_top_k_verification_and_memory():
    n = 12
    first, second = Fake(n, 0), Fake(n, 1, ("loss", "accuracy"), (-1.0, 1.0))
    ts = TwoStage(first, second, top_k=3)
    g = torch.Generator().manual_seed(0)
    pop = torch.rand(20, n, generator=g) < 0.5
    pop[5] = pop[4]  # a duplicate is verified once
    out = ts.evaluate(pop)[:, 0]
    e1 = first.evaluate(pop)[:, 0]
    distinct = []  # row indices in stage-1 order, one per distinct genome
    for i in torch.argsort(e1, stable=True).tolist():
        if all(not torch.equal(pop[i], pop[j]) for j in distinct):
            distinct.append(i)
    assert all(ts.last["verified"][i] for i in distinct[:3])
    assert not any(ts.last["verified"][i] for i in distinct[3:])
    assert ts.last["verified"].sum() <= 4 and second.seen == 3 and len(ts.verified) == 3
    # every verified individual outranks every unverified one
    v = ts.last["verified"]
    assert out[v].max() < out[~v].min()
    # verified ones are ranked by stage 2
    s2 = second.evaluate(pop)[:, 0]
    vi = torch.nonzero(v).flatten()
    assert torch.equal(torch.argsort(out[vi]), torch.argsort(s2[vi]))
    # the next generation verifies 3 new genomes; a reappearing verified genome costs nothing
    second.seen = 0
    ts.evaluate(pop)
    assert second.seen == 3 and len(ts.verified) == 6 and ts.last["verified"].sum() >= 6
    assert ts.budget()["stage1_evaluations"] == 40
    # final candidates
    res = ts.verify(pop[:2])
    assert res.shape == (2, 2)


def test_verify_every_and_stage1_only():
    n = 8
    ts = TwoStage(Fake(n, 0), Fake(n, 1), top_k=2, verify_every=2)
    pop = torch.rand(10, n) < 0.5
    ts.evaluate(pop)
    ts.evaluate(torch.rand(10, n) < 0.5)  # call 1: no verification
    assert len(ts.verified) == 2
    plain = TwoStage(Fake(n, 0), Fake(n, 1), top_k=0)
    assert torch.allclose(plain.evaluate(pop)[:, 0], Fake(n, 0).evaluate(pop)[:, 0])


def test_twostage_bad_arguments():
    with pytest.raises(EvopruneError):
        TwoStage(Fake(4, 0), Fake(5, 1))
    with pytest.raises(EvopruneError):
        TwoStage(Fake(4, 0), Fake(4, 1), top_k=-1)
    with pytest.raises(EvopruneError):
        TwoStage(Fake(4, 0), object())
    with pytest.raises(EvopruneError):
        TwoStage(Fake(4, 0), Fake(4, 1)).evaluate(torch.ones(2, 5, dtype=torch.bool))


def test_registry_names_and_user_spec(tmp_path):
    for name in ("reconstruction", "network", "twostage", "naive"):
        assert name in EVALUATORS.names()
    assert get_evaluator("reconstruction") is ReconstructionFitness
    user = tmp_path / "myfit.py"
    user.write_text(textwrap.dedent("""
        import torch
        class MyEvaluator:
            objectives, weights, name = ("kept",), (-1.0,), "mine"
            def __init__(self, space, unit, calib, model=None):
                self.n = space.unit(unit).channels
            def evaluate(self, masks):
                return masks.sum(1, keepdim=True).double()
    """))
    model = create_model("vgg11", width=0.125).eval()
    space = PruningSpace(model)
    ev = build_evaluator(f"{user}:MyEvaluator", space, "features.4", CalibrationData([torch.randn(2, 3, 32, 32)]))
    assert ev.evaluate(torch.ones(3, ev.n, dtype=torch.bool))[0, 0] == ev.n
    with pytest.raises(EvopruneError) as e:
        get_evaluator("reconstructon")
    assert "did you mean 'reconstruction'" in str(e.value)


def _batches(n, b, seed):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(b, 3, 32, 32, generator=g), torch.randint(0, 10, (b,), generator=g)) for _ in range(n)]


def test_twostage_in_the_ga_on_a_real_unit():
    """The paper's loop: ChannelSelectionProblem + GA + TwoStage(stage 1, stage 2) on a VGG unit."""
    from evoprune.problems.channel_selection import ChannelSelectionProblem
    from evoprune.strategies.ga import ga

    torch.manual_seed(0)
    model = create_model("vgg11", width=0.25).eval()
    space = PruningSpace(model)
    calib = CalibrationData(_batches(1, 16, 0), _batches(1, 16, 1))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fit = build_evaluator("twostage", space, "features.8", calib, top_k=2)
    assert isinstance(fit.first, ReconstructionFitness) and isinstance(fit.second, NetworkFitness)
    problem = ChannelSelectionProblem(64, 32, fit)
    res = ga(problem, budget=400, seed=0, pop_size=20, generations=10)
    assert res.best_genome.sum() == 32
    best = torch.from_numpy(np.asarray(res.best_genome, dtype=bool))
    # the GA's best is a verified genome (verified ones always outrank stage-1 scores)
    assert float(res.best_fitness[0]) < -BIG / 2
    assert fit.verify(best[None]).shape == (1, 2)
    assert fit.second.evaluations <= 2 * fit.calls + 1
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
