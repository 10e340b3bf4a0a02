"""Per-block cardinality operators: every block keeps exactly k/g of its n/g channels."""
from __future__ import annotations

import numpy as np
import pytest

from evoprune.errors import EvopruneError
from evoprune.operators import get_operator
from evoprune.operators.blockwise import blockwise

N, K, G = 24, 12, 4


def per_block(pop):
    return np.asarray(pop).reshape(len(pop), G, N // G).sum(2)


@pytest.mark.parametrize("init", ["random-k", "importance"])
def test_init_and_repair_keep_every_block(init):
    rng = np.random.default_rng(0)
    op = blockwise(get_operator("init", init), "init", G)
    pop = op(10, N, K, rng=rng, importance=np.arange(N, dtype=float))
    assert pop.shape == (10, N) and np.all(per_block(pop) == K // G)
    broken = rng.random((10, N)) < 0.5
    fixed = blockwise(get_operator("repair", "exact-k-random"), "repair", G)(broken, rng=rng, k=K)
    assert np.all(per_block(fixed) == K // G)


@pytest.mark.parametrize("name", ["cardinality", "uniform"])
def test_crossover_and_mutation_keep_every_block(name):
    rng = np.random.default_rng(1)
    init = blockwise(get_operator("init", "random-k"), "init", G)
    a, b = init(8, N, K, rng=rng), init(8, N, K, rng=rng)
    cx = blockwise(get_operator("crossover", name), "crossover", G)
    c, d = cx.batch(a, b, rng=rng)
    if name == "cardinality":
        assert np.all(per_block(c) == K // G) and np.all(per_block(d) == K // G) and cx.preserves_k
    mut = blockwise(get_operator("mutation", "swap"), "mutation", G)
    m = mut.batch(a, rng=rng)
    assert np.all(per_block(m) == K // G)
    assert np.all((m != a).sum(1) == 2)  # one swap per individual, inside one block
    ind = a[0].copy()
    (out,) = mut(ind, rng=rng)
    assert out is ind and np.all(per_block(out[None]) == K // G)


def test_blocks_must_divide():
    with pytest.raises(EvopruneError, match="equal blocks"):
        blockwise(get_operator("init", "random-k"), "init", 5)(3, N, K, rng=np.random.default_rng(0))


def test_ga_and_toolbox_on_a_grouped_problem_keep_every_block():
    from evoprune.problems.channel_selection import ChannelSelectionProblem
    from evoprune.strategies.ga import ga
    from evoprune.suite import QuadraticEvaluator

    rng = np.random.default_rng(3)
    a = rng.normal(size=(N, 6))
    q = a @ a.T
    p = ChannelSelectionProblem(N, K, QuadraticEvaluator(q / q.sum()), groups=G)
    r = ga(p, 600, seed=0, pop_size=20, seeding="greedy", local_search="swap")
    assert np.all(per_block(r.history_genomes) == K // G)
    tb = p.toolbox(seed=0)
    pop = tb.population(n=6)
    tb.mate(pop[0], pop[1])
    tb.mutate(pop[2])
    assert np.all(per_block(np.array(pop)) == K // G)
    with pytest.raises(EvopruneError, match="equal blocks"):
        ChannelSelectionProblem(N, 10, QuadraticEvaluator(q), groups=G)


def test_pipeline_selects_channels_of_a_grouped_unit_with_the_ga():
    import torch
    from torch import nn

    from evoprune.config import PruneConfig
    from evoprune.data import load_dataset, make_loaders
    from evoprune.pruning import PruningSpace
    from evoprune.unit_selectors import ga_select

    class Grouped(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(8)
            self.conv2 = nn.Conv2d(8, 8, 3, padding=1, groups=2, bias=False)
            self.bn2 = nn.BatchNorm2d(8)
            self.fc = nn.Linear(8, 10)

        def forward(self, x):
            x = torch.relu(self.bn1(self.conv1(x)))
            return self.fc(torch.relu(self.bn2(self.conv2(x))).mean((2, 3)))

    torch.manual_seed(0)
    model = Grouped().eval()
    space = PruningSpace(model, (1, 3, 32, 32), warn=False)
    unit = next(u for u in space.units if u.channel_groups == 2)
    loaders = make_loaders(load_dataset("mini-cifar10"), batch_size=16, calib_size=32)
    cfg = PruneConfig(pop_size=8, generations=3, calib_batches=1, bn_batches=1, eval_batches=1, batch_size=16,
                      stage2_top_k=1, finalists=2)
    mask, info = ga_select(model, space, unit.name, 4, loaders, cfg, 0, lambda m: None)
    assert "selector_fallback" not in info and info["ga_evaluations"] > 0
    assert mask.reshape(2, -1).sum(1).tolist() == [2, 2]
