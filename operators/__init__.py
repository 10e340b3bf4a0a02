"""DEAP operators on binary chromosomes (installed as ``evoprune.operators``)."""
