"""Package discovery; all other metadata lives in setup.cfg.

``evoprune/`` is discovered (a new subpackage cannot be left out of the wheel). ``operators/`` and ``problems/``
stay at the top level of the repository (the required layout) and install as ``evoprune.operators`` and
``evoprune.problems`` through ``package_dir`` in setup.cfg; their subpackages are discovered the same way.
"""
from setuptools import find_packages, setup

_MAPPED = ("operators", "problems")
PACKAGES = find_packages(include=["evoprune", "evoprune.*"]) + [
    f"evoprune.{p}" for p in find_packages(include=[f"{m}{tail}" for m in _MAPPED for tail in ("", ".*")])]

setup(packages=PACKAGES)
