"""Benchmark suites of channel-selection problems: the paper's per-layer problem, frozen for EC researchers.

An *instance* is one unit of a trained network at one keep ratio: choose exactly ``k`` of ``n`` channels to
minimise the stage-1 reconstruction error ``e(m) = (1 - m)^T Q (1 - m)`` (``Q``: the unit's Gram matrix of channel
contributions to the consumers' BN-scaled pre-activation outputs, normalised so that ``1^T Q 1 = 1``; see
:mod:`evoprune.fitness.reconstruction`). A *suite* file (``.npz``) holds every unit's ``Q`` (float64; ``Q_<j>``), per instance ``n``,
``k``, the unit's name, a best-known mask with how it was found, and sha256 hashes of the model and calibration
data it came from. It loads with numpy alone (no torch, no data set; without evoprune too: ``header`` is UTF-8
JSON bytes naming each instance's ``q`` index, ``best_<i>`` its best-known mask), so one EA run on one instance
takes milliseconds::

    from evoprune.suite import load_suite
    suite = load_suite("vgg16_w0.25.npz")
    inst = suite["features.10@0.5"]
    inst.error(masks)            # [P] errors of a bool population [P, n], one matrix product
    problem = inst.problem()     # a ChannelSelectionProblem for any evoprune strategy / DEAP toolbox

Building a suite (:func:`export_suite`) needs torch and the model; using one does not.
"""
from __future__ import annotations

import hashlib
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence

import numpy as np

from .errors import EvopruneError
from .io import sha256_file

FORMAT = "evoprune-suite"
VERSION = 1
EXHAUSTIVE_MAX_N = 20  # instances this small get their exact optimum by enumeration


class QuadraticEvaluator:
    """``e(m) = (1 - m)^T Q (1 - m)`` for a bool population ``[P, n]``: one matrix product (numpy)."""

    name = "reconstruction"
    objectives = ("reconstruction_error",)
    weights = (-1.0,)
    wants_torch = False

    def __init__(self, q: np.ndarray) -> None:
        self.Q = np.asarray(q, dtype=np.float64)

    def error(self, masks: np.ndarray) -> np.ndarray:
        r = (~np.asarray(masks, dtype=bool)).astype(np.float64)
        # einsum, not BLAS: a row's value does not depend on how the population is chunked
        return np.einsum("pi,ij,pj->p", r, self.Q, r, optimize=False)

    def evaluate(self, masks: np.ndarray) -> np.ndarray:
        return self.error(masks)[:, None]


@dataclass
class Instance:
    """One unit at one keep ratio: ``Q`` and the best-known solution."""

    name: str
    unit: str
    ratio: float
    n: int
    k: int
    Q: np.ndarray
    groups: int = 1
    best_mask: Optional[np.ndarray] = None
    best_value: float = float("nan")
    best_method: str = ""

    def error(self, masks: Any) -> np.ndarray:
        """Errors ``[P]`` of bool masks ``[P, n]`` (or one mask)."""
        m = np.atleast_2d(np.asarray(masks, dtype=bool))
        if m.shape[1] != self.n:
            raise EvopruneError(f"instance '{self.name}' has {self.n} channels, masks have {m.shape[1]}")
        return QuadraticEvaluator(self.Q).error(m)

    def problem(self, **kw: Any):
        """A :class:`~evoprune.problems.ChannelSelectionProblem` on this instance (numpy evaluator)."""
        from evoprune.problems.channel_selection import ChannelSelectionProblem

        return ChannelSelectionProblem(self.n, self.k, QuadraticEvaluator(self.Q), name=f"suite[{self.name}]",
                                       groups=self.groups, **kw)

    def gap(self, value: Any) -> np.ndarray:
        """Relative gap to the best-known value, ``(e - e*) / e*`` (0 = as good as the best known)."""
        return (np.asarray(value, dtype=float) - self.best_value) / max(self.best_value, 1e-300)

    def to_meta(self) -> Dict[str, Any]:
        return {"name": self.name, "unit": self.unit, "ratio": self.ratio, "n": self.n, "k": self.k,
                "groups": self.groups, "best_value": self.best_value, "best_method": self.best_method}


@dataclass
class Suite:
    """A set of instances with where they came from."""

    name: str
    instances: List[Instance]
    meta: Dict[str, Any] = field(default_factory=dict)

    def __iter__(self) -> Iterator[Instance]:
        return iter(self.instances)

    def __len__(self) -> int:
        return len(self.instances)

    def __getitem__(self, key: Any) -> Instance:
        if isinstance(key, int):
            return self.instances[key]
        for inst in self.instances:
            if inst.name == key:
                return inst
        raise EvopruneError(f"suite '{self.name}' has no instance '{key}'; it has: "
                            f"{', '.join(i.name for i in self.instances[:8])}{' ...' if len(self) > 8 else ''}")

    def select(self, names: Optional[Sequence[str]]) -> "Suite":
        if not names:
            return self
        return Suite(self.name, [self[n] for n in names], dict(self.meta))

    def save(self, path: Any) -> Path:
        """Write the suite (atomically) as ``.npz``: numpy arrays and one JSON header, nothing pickled."""
        from .io import atomic_write_bytes

        arrays: Dict[str, np.ndarray] = {}
        units: Dict[str, int] = {}  # one Q per unit, shared by its ratios
        metas = []
        for i, inst in enumerate(self.instances):
            if inst.unit not in units:
                units[inst.unit] = len(units)
                arrays[f"Q_{units[inst.unit]}"] = np.asarray(inst.Q, dtype=np.float64)
            if inst.best_mask is not None:
                arrays[f"best_{i}"] = np.asarray(inst.best_mask, dtype=bool)
            metas.append(dict(inst.to_meta(), q=units[inst.unit]))
        header = {"format": FORMAT, "version": VERSION, "name": self.name, "meta": self.meta, "instances": metas}
        arrays["header"] = np.frombuffer(json.dumps(header).encode("utf-8"), dtype=np.uint8)
        import io as _io

        buf = _io.BytesIO()
        np.savez_compressed(buf, **arrays)
        path = Path(path)
        atomic_write_bytes(path, buf.getvalue())
        return path


def load_suite(path: Any) -> Suite:
    """Read a suite file (numpy only). Damaged, foreign or newer files are one-line errors."""
    p = Path(path)
    if not p.is_file():
        raise EvopruneError(f"suite file '{p}' does not exist; make one with 'evoprune suite export' or use a "
                            "bundled one (evoprune suite list)")
    try:
        with np.load(p, allow_pickle=False) as z:
            if "header" not in z.files:
                raise EvopruneError(f"'{p}' is not an evoprune suite (no header); make one with 'evoprune suite export'")
            header = json.loads(bytes(z["header"]).decode("utf-8"))
            if header.get("format") != FORMAT:
                raise EvopruneError(f"'{p}' is not an evoprune suite (format {header.get('format')!r})")
            if int(header.get("version", -1)) != VERSION:
                raise EvopruneError(f"suite '{p}' has format version {header.get('version')}, this evoprune reads "
                                    f"version {VERSION}; export it again with this version")
            instances = []
            for i, m in enumerate(header["instances"]):
                q = np.asarray(z[f"Q_{int(m['q'])}"], dtype=np.float64)
                if q.shape != (m["n"], m["n"]):
                    raise EvopruneError(f"suite '{p}': instance '{m['name']}' has a Q of shape {q.shape}, "
                                        f"expected ({m['n']}, {m['n']})")
                best = np.asarray(z[f"best_{i}"], dtype=bool) if f"best_{i}" in z.files else None
                instances.append(Instance(m["name"], m["unit"], float(m["ratio"]), int(m["n"]), int(m["k"]), q,
                                          int(m.get("groups", 1)), best, float(m.get("best_value", "nan")),
                                          str(m.get("best_method", ""))))
    except EvopruneError:
        raise
    except (zipfile.BadZipFile, OSError, ValueError, KeyError, EOFError, json.JSONDecodeError) as exc:
        raise EvopruneError(f"suite file '{p}' is damaged ({type(exc).__name__}: {str(exc)[:80]}); export it "
                            "again") from None
    return Suite(str(header.get("name", p.stem)), instances, dict(header.get("meta") or {}))


def bundled_suites() -> Dict[str, Path]:
    """The suites shipped with the package: ``{name: path}``."""
    d = Path(__file__).with_name("assets") / "suites"
    return {p.stem: p for p in sorted(d.glob("*.npz"))} if d.is_dir() else {}


def resolve_suite(spec: str) -> Suite:
    """A bundled suite name or a path to a ``.npz``."""
    bundled = bundled_suites()
    if spec in bundled:
        return load_suite(bundled[spec])
    if not spec.endswith(".npz") and not Path(spec).exists():
        raise EvopruneError(f"unknown suite '{spec}'; bundled: {', '.join(bundled) or 'none'}, or give a .npz path")
    return load_suite(spec)


# ------------------------------------------------------------------------------------------------ best-known
def improve_best_known(inst: Instance, candidates: Dict[str, np.ndarray]) -> bool:
    """Take the best of ``candidates`` (``{method: mask}``) if it beats the current best-known; returns whether."""
    changed = False
    for method, mask in candidates.items():
        mask = np.asarray(mask, dtype=bool)
        per_block = mask.reshape(inst.groups, -1).sum(1)
        if mask.sum() != inst.k or np.any(per_block != inst.k // inst.groups):
            raise EvopruneError(f"best-known candidate '{method}' keeps {per_block.tolist()} channels per block, not "
                                f"{inst.k // inst.groups} in each of {inst.groups}")
        v = float(inst.error(mask)[0])
        if not np.isfinite(inst.best_value) or v < inst.best_value - 1e-15:
            inst.best_mask, inst.best_value, inst.best_method = mask.copy(), v, method
            changed = True
    return changed


def exhaustive_optimum(inst: Instance) -> np.ndarray:
    """The exact optimum by enumeration (``n <= EXHAUSTIVE_MAX_N``)."""
    from evoprune.problems.channel_selection import ChannelSelectionProblem

    prob = ChannelSelectionProblem(inst.n, inst.k, QuadraticEvaluator(inst.Q), groups=inst.groups)
    best, _ = prob.brute_force(max_n=EXHAUSTIVE_MAX_N)
    return best


# ------------------------------------------------------------------------------------------------------ export
def export_suite(checkpoint: str, data: str = "mini-cifar10", ratios: Sequence[float] = (0.25, 0.5, 0.75),
                 data_dir: Optional[str] = None, calib_batches: int = 4, batch_size: int = 128, seed: int = 0,
                 units: Optional[Sequence[str]] = None, name: Optional[str] = None, device: str = "cpu",
                 min_keep: int = 1, log=print) -> Suite:
    """Stage-1 instances of every unit of ``checkpoint`` at every keep ratio, with greedy best-known solutions.

    Q is computed on ``calib_batches`` un-augmented training batches (never test), exactly as the pipeline does;
    each instance starts with ThiNet's greedy + swap local search as its best-known (exhaustive when small).
    """
    from .fitness import CalibrationData, ReconstructionFitness
    from .pruning import PruningSpace
    from .pruning.greedy import greedy_removal
    from .sensitivity import keep_count
    from .session import build_setup
    from .strategies.local_search import swap_descent

    for r in ratios:
        if not 0.0 < float(r) < 1.0:
            raise EvopruneError(f"--ratios must be keep fractions in (0, 1), got {r}")
    from .device import resolve_device

    s = build_setup(data, data_dir, None, 1.0, checkpoint, resolve_device(device), batch_size=batch_size, seed=seed)
    model = s.model.eval()
    space = PruningSpace(model, (1, s.data.in_channels, s.data.image_size, s.data.image_size), warn=False)
    calib = CalibrationData.from_loaders(s.loaders, train_batches=calib_batches, held_out_batches=0,
                                         batch_size=batch_size, seed=seed)
    chosen = [u for u in space.units if units is None or u.name in units]
    if units is not None and len(chosen) != len(set(units)):
        missing = sorted(set(units) - {u.name for u in chosen})
        raise EvopruneError(f"unknown unit(s) {', '.join(missing)}; see 'evoprune sensitivity --dry-run' or "
                            f"the units of the model: {', '.join(u.name for u in space.units[:6])} ...")
    data_hash = hashlib.sha256()
    for x in calib.train:
        t = x[0] if isinstance(x, (tuple, list)) else x
        data_hash.update(np.ascontiguousarray(t.detach().cpu().numpy()).tobytes())
    instances: List[Instance] = []
    for u in chosen:
        ev = ReconstructionFitness.from_space(space, u, calib, model=model)
        q = ev.Q.detach().cpu().numpy().astype(np.float64)
        for r in ratios:
            k = keep_count(float(r), u.channels, min_keep, u.channel_groups)
            if k >= u.channels:
                continue
            inst = Instance(f"{u.name}@{r:g}", u.name, float(r), int(u.channels), int(k), q, int(u.channel_groups))
            greedy = greedy_removal(q, k, groups=u.channel_groups)
            cands = {"greedy": greedy,
                     "greedy+swap-descent": swap_descent(q, greedy, groups=u.channel_groups)[0]}
            if u.channels <= EXHAUSTIVE_MAX_N:
                cands["exhaustive"] = exhaustive_optimum(inst)
            improve_best_known(inst, cands)
            if "exhaustive" in cands:
                inst.best_method = "exhaustive"  # the optimum, whichever method found it first
            instances.append(inst)
            log(f"{inst.name:>28}  n={inst.n:4d} k={inst.k:4d}  best-known {inst.best_value:.6g} ({inst.best_method})")
    meta = {"checkpoint": Path(checkpoint).name, "model_sha256": sha256_file(checkpoint), "dataset": s.data.name,
            "calibration_sha256": data_hash.hexdigest(), "calib_batches": calib_batches, "batch_size": batch_size,
            "seed": seed, "ratios": [float(r) for r in ratios], "arch": s.meta.get("arch"),
            "objective": "(1-m)^T Q (1-m), Q normalised to 1^T Q 1 = 1"}
    return Suite(name or Path(checkpoint).stem, instances, meta)
