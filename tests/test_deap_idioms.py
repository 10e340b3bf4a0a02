"""Our problems under DEAP's own loops, written as DEAP's examples write them."""
from __future__ import annotations

import random

import numpy as np
from deap import algorithms, tools

from evoprune.problems import biobjective_subset, planted_qp


def _stats():
    s = tools.Statistics(lambda ind: ind.fitness.values[0])
    s.register("min", np.min)
    return s


def test_easimple_from_the_deap_tutorial():
    random.seed(0)
    problem = planted_qp(n=32, seed=1)
    toolbox = problem.toolbox(seed=0)
    pop = toolbox.population(n=30)  # the keyword form every DEAP example uses
    ind = toolbox.individual()
    assert int(np.asarray(ind).sum()) == problem.k and len(pop) == 30
    hof = tools.HallOfFame(1, similar=np.array_equal)
    pop, log = algorithms.eaSimple(pop, toolbox, cxpb=0.7, mutpb=0.3, ngen=15, stats=_stats(), halloffame=hof,
                                   verbose=False)
    assert all(int(np.asarray(i).sum()) == problem.k for i in pop)  # the in-place operators keep k
    first, last = log.select("min")[0], log.select("min")[-1]
    assert last <= first and hof[0].fitness.values[0] == min(i.fitness.values[0] for i in pop + [hof[0]])


def test_eamupluslambda():
    random.seed(1)
    problem = planted_qp(n=32, seed=2)
    toolbox = problem.toolbox(seed=1)
    pop = toolbox.population(n=20)
    pop, log = algorithms.eaMuPlusLambda(pop, toolbox, mu=20, lambda_=40, cxpb=0.5, mutpb=0.5, ngen=10,
                                         stats=_stats(), verbose=False)
    assert len(pop) == 20 and log.select("min")[-1] <= log.select("min")[0]


def test_nsga2_loop_from_deap_examples():
    """deap/examples/ga/nsga2.py's loop, unchanged but for the problem."""
    random.seed(2)
    problem = biobjective_subset(n=16, seed=0)
    toolbox = problem.toolbox(seed=2)
    pop = toolbox.population(n=24)
    for ind, fit in zip(pop, toolbox.map(toolbox.evaluate, pop)):
        ind.fitness.values = fit
    pop = toolbox.select(pop, len(pop))
    for _ in range(10):
        offspring = tools.selTournamentDCD(pop, len(pop))
        offspring = [toolbox.clone(ind) for ind in offspring]
        for a, b in zip(offspring[::2], offspring[1::2]):
            if random.random() <= 0.9:
                toolbox.mate(a, b)
            toolbox.mutate(a)
            toolbox.mutate(b)
            del a.fitness.values, b.fitness.values
        invalid = [ind for ind in offspring if not ind.fitness.valid]
        for ind, fit in zip(invalid, toolbox.map(toolbox.evaluate, invalid)):
            ind.fitness.values = fit
        pop = toolbox.select(pop + offspring, len(pop))
    front = tools.sortNondominated(pop, len(pop), first_front_only=True)[0]
    assert len(front) >= 2 and all(ind.fitness.valid for ind in pop)
