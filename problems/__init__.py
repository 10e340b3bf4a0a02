"""DEAP-ready problem definitions (installed as ``evoprune.problems``).

Importing this package registers the benchmark problems in :data:`evoprune.registry.PROBLEMS`.
"""
from . import benchmarks  # noqa: F401  (registers onemax-k, planted-qp, random-qp, biobjective-subset)
from .base import FitnessND, Individual, as_array, make_toolbox, wrap, wrap_population
from .benchmarks import BenchmarkProblem, biobjective_subset, onemax_k, planted_qp, random_qp
from .channel_selection import ChannelSelectionProblem
from .network_pruning import NetworkPruningProblem

__all__ = ["ChannelSelectionProblem", "NetworkPruningProblem", "BenchmarkProblem", "FitnessND", "Individual",
           "as_array", "make_toolbox", "wrap", "wrap_population", "onemax_k", "planted_qp", "random_qp", "biobjective_subset"]
