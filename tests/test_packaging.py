"""The package as users install it: every module in the wheel, a Python floor the code meets, no hidden import errors.

The editable install the suite runs under sees the source tree, so a package left out of the wheel goes unnoticed
there; these tests build the real wheel and read its file list.
"""
from __future__ import annotations

import configparser
import importlib
import pkgutil
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# source folder -> the package path it installs as
_PACKAGE_ROOTS = {"evoprune": "evoprune", "operators": "evoprune/operators", "problems": "evoprune/problems"}


def _setup_cfg() -> configparser.ConfigParser:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    return cfg


def _source_files() -> set:
    """Every .py and data file the package needs, as its path inside the wheel."""
    want = set()
    for src, dest in _PACKAGE_ROOTS.items():
        for f in (ROOT / src).rglob("*"):
            if "__pycache__" in f.parts or not f.is_file() or f.suffix == ".pyc":
                continue
            rel = f.relative_to(ROOT / src)
            if src == "evoprune" and rel.parts[0] in ("operators", "problems"):
                continue  # not a thing in the tree, but never let a stray copy mask the mapped one
            want.add(f"{dest}/{rel.as_posix()}")
    return want


@pytest.fixture(scope="module")
def wheel_files(tmp_path_factory) -> set:
    out = tmp_path_factory.mktemp("wheel")
    build = tmp_path_factory.mktemp("build")
    src = build / "src"  # a copy: building must not leave build/ or *.egg-info in the checkout
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".venv", ".git", "runs", "__pycache__", "build",
                                                                  "*.egg-info", ".pytest_cache", "benchmarks"))
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                           "-w", str(out), str(src)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (whl,) = out.glob("evoprune-*.whl")
    with zipfile.ZipFile(whl) as z:
        return set(z.namelist())


def test_wheel_holds_every_package_and_file(wheel_files):
    missing = sorted(_source_files() - wheel_files)
    assert not missing, f"left out of the wheel: {missing[:10]}"


def test_wheel_installs_the_cli(wheel_files):
    entry = [n for n in wheel_files if n.endswith(".dist-info/entry_points.txt")]
    assert entry, "the wheel declares no entry points"


def test_every_package_directory_is_a_package():
    """A folder of modules without __init__.py is a namespace package that setuptools' discovery skips."""
    for src in _PACKAGE_ROOTS:
        for d in [ROOT / src, *(p for p in (ROOT / src).rglob("*") if p.is_dir())]:
            if "__pycache__" in d.parts or d.name == "assets":
                continue
            if any(d.glob("*.py")):
                assert (d / "__init__.py").exists(), f"{d.relative_to(ROOT)} has modules but no __init__.py"


def test_every_module_imports():
    """No module of ours fails to import (the CLI and registries no longer skip one that does)."""
    import evoprune

    failures = []
    for info in pkgutil.walk_packages(evoprune.__path__, "evoprune."):
        if info.name.endswith("__main__"):
            continue
        try:
            importlib.import_module(info.name)
        except Exception as exc:  # noqa: BLE001 - collect them all
            failures.append(f"{info.name}: {type(exc).__name__}: {exc}")
    assert not failures, failures


def test_code_runs_on_the_declared_python_floor():
    """``python_requires`` is true: vermin finds no construct newer than the floor (3.10+ syntax, tomllib, ...)."""
    floor = re.fullmatch(r">=\s*(\d+)\.(\d+)", _setup_cfg()["options"]["python_requires"].strip())
    assert floor, "python_requires should be a plain '>=X.Y' floor"
    vermin = shutil.which("vermin", path=str(Path(sys.executable).parent)) or shutil.which("vermin")
    assert vermin, "vermin is a dev dependency (pip install -e '.[dev]')"
    proc = subprocess.run([vermin, "--no-tips", "-q", "--eval-annotations", "--violations", "--exclude", "long",
                           f"-t={floor[1]}.{floor[2]}-", *(str(ROOT / s) for s in _PACKAGE_ROOTS)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_torch_pruning_floor_is_pinned_and_has_our_api():
    """The lower bound in setup.cfg is the version pinned for CI, and the installed one has the API we patch."""
    reqs = _setup_cfg()["options"]["install_requires"]
    floor = re.search(r"torch-pruning>=\s*([\d.]+)", reqs)
    assert floor
    pins = dict(l.split("==") for l in (ROOT / "constraints.txt").read_text().splitlines()
                if "==" in l and not l.startswith("#"))
    pin = pins.get("torch-pruning", "")
    assert pin.split(".")[:2] == floor[1].split(".")[:2], f"CI pins torch-pruning {pin!r}, not the floor {floor[1]}"
    from torch_pruning.dependency import index_mapping

    assert callable(index_mapping.update_index_mapping)
