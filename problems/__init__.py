"""DEAP-ready problem definitions (installed as ``evoprune.problems``)."""
