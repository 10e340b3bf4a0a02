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
