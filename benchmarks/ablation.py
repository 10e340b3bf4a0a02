"""Which part of the pipeline survives fine-tuning? The ablation of the search issue, after the KD fine-tune.

On one baseline, one MACs/params budget and one fine-tune budget (per-unit KD steps + final KD epochs, the same
optimiser steps for every cell), ``--seeds`` seeds per cell, every cell a normal ``evoprune prune`` run:

* allocation: ``sensitivity`` (the paper) vs ``search`` (``--allocation search``: prune's CMA-ES on the
  whole-network adaptive-BN accuracy under the budget, seeded with the sensitivity and uniform allocations), or
  ``uniform``; ``sensitivity@0.3`` is the sensitivity allocation with ``--min-keep-ratio 0.3``;
* channels: ``l1`` (Li et al.) vs ``ga`` (the paper's GA on the two-step fitness, prune's default greedy seeding);
* ``--refit`` off vs on (ThiNet's least-squares refit of each unit's consumers on the kept channels);
* plus KD vs KD + attention transfer (``--at-weight``) on the grid cell with the best mean after fine-tuning;
* ``--extra-cells``: more rows at every seed (any allocation/selector/refit, KD term, GA ``--fitness``, final
  fine-tune ``epochs=N`` and KD ``unit-steps=N`` after each unit), e.g. the GA's channels under the best
  pipeline's refit + AT, or ``uniform/l1/on/0/epochs=4/unit-steps=0``: every step in the final fine-tune's one
  cosine schedule, as the peers' fine-tune is; ``--long-cells`` with ``--long-finetune-epochs N``: those
  cells once (seed 0) with an N-epoch final KD fine-tune (the paper's claim is about a converged fine-tune).

All cells share one set of sensitivity curves (computed once). Test accuracy right after pruning is the
prune-only twin of each cell (``--finetune-steps 0 --finetune-epochs 0``) when ``--after-prune`` is given; the
pipeline's own number after fine-tuning is what the table ranks. Per cell: mean ± std over seeds, the paired
Wilcoxon signed-rank test and the mean paired difference against ``sensitivity + l1`` without refit (the
practitioner's pipeline), paired by seed.

Every finished run's ``results.json`` is copied to ``benchmarks/results/ablation<tag>/`` and a run whose copy
exists is not rerun, so a later session (even on a fresh machine) continues where this one stopped; rerun the same
command. A run stopped midway (``pkill -TERM -f "evoprune --quiet prune"``: it saves at its next safe point) leaves
its resumable folder in ``benchmarks/results/ablation<tag>/partial/`` with its sha256 lines: commit it, and the
same command in the next session resumes that run where it stopped (a long fine-tune spans sessions this way).
Results: ``benchmarks/results/ablation<tag>.{json,md}``.

    python benchmarks/ablation.py --seeds 3 --jobs 2     # ~7 min per run on one CPU thread (VGG-16 w0.25)
    python benchmarks/ablation.py --extra-cells sensitivity/ga/on/50 --long-finetune-epochs 60 --jobs 1
    python benchmarks/ablation.py ... --run-seeds 2 --run-cells sensitivity/ga/on/50   # one run; a 2nd process
                                                                                       # takes another
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import itertools
import json
import os
import shutil
import statistics
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

from _common import RESULTS, ROOT, evoprune_cmd, machine, prune_run, run, save, shared_cifar10

from evoprune.textable import markdown_table

REFERENCE = ("sensitivity", "l1", "off")


@dataclass(frozen=True)
class Cell:
    """One configuration of the ablation: the three factors, plus the KD term, fine-tune length, GA fitness and
    per-unit KD steps of the extra rows (0 / "" / None: the ablation's own fine-tune epochs, prune's default
    fitness and the ablation's ``--finetune-steps``)."""

    allocation: str
    selector: str
    refit: str
    at: float = 0.0
    epochs: int = 0
    fitness: str = ""
    unit_steps: int | None = None

    @property
    def name(self) -> str:  # the names of the committed runs: the factors first, every extra only when set
        return (f"{self.allocation}-{self.selector}-refit{self.refit}" + (f"-at{self.at:g}" if self.at else "")
                + (f"-ft{self.epochs}" if self.epochs else "") + (f"-fit{self.fitness}" if self.fitness else "")
                + (f"-us{self.unit_steps}" if self.unit_steps is not None else ""))

    def steps_per_unit(self, default: int) -> int:
        """The KD steps after each unit: this cell's own, else the ablation's ``--finetune-steps``."""
        return default if self.unit_steps is None else self.unit_steps

    @property
    def factors(self) -> tuple:
        return self.allocation, self.selector, self.refit

    def flags(self) -> list:
        allocation, _, floor = self.allocation.partition("@")  # sensitivity@0.3: --min-keep-ratio 0.3
        return (["--allocation", allocation, *(["--min-keep-ratio", floor] if floor else []),
                 "--selector", self.selector, "--refit" if self.refit == "on" else "--no-refit", "--at-weight", str(self.at)]
                + (["--fitness", self.fitness] if self.fitness else []))

    @classmethod
    def parse(cls, spec: str, epochs: int = 0) -> "Cell":
        """``allocation/selector/refit[/at[/fitness]][/epochs=N][/unit-steps=N]``, e.g.
        ``sensitivity/ga/on/50/reconstruction-refit`` or ``uniform/l1/on/0/epochs=4/unit-steps=0`` (no KD steps
        after each unit, a 4-epoch final fine-tune: one cosine schedule, as the peers get)."""
        parts = spec.strip().split("/")
        named = dict(p.split("=", 1) for p in parts[3:] if "=" in p)
        plain = [p for p in parts if "=" not in p]
        try:
            if not 3 <= len(plain) <= 5 or plain[2] not in ("on", "off") or set(named) - {"epochs", "unit-steps"}:
                raise ValueError
            at = float(plain[3]) if len(plain) > 3 and plain[3] else 0.0
            epochs = int(named.get("epochs", epochs))
            unit_steps = int(named["unit-steps"]) if "unit-steps" in named else None
            if epochs < 0 or (unit_steps is not None and unit_steps < 0):
                raise ValueError
        except ValueError:
            print(f"error: cell '{spec}' is not allocation/selector/on|off[/at-weight[/fitness]][/epochs=N]"
                  "[/unit-steps=N] (N >= 0)", file=sys.stderr)
            sys.exit(2)
        return cls(*plain[:3], at, epochs, plain[4] if len(plain) > 4 else "", unit_steps)


def prune_one(cell: Cell, seed: int, a, phase: str = "finetuned") -> dict:
    """One cell's ``evoprune prune`` run; its results.json, from the committed copy when there is one."""
    ft = ["--finetune-steps", "0", "--finetune-epochs", "0"] if phase == "pruned" else \
        ["--finetune-steps", str(cell.steps_per_unit(a.finetune_steps)),
         "--finetune-epochs", str(cell.epochs or a.finetune_epochs)]
    flags = ["--checkpoint", a.checkpoint, "--data", a.data, "--target-macs", str(a.target_macs),
             *(["--target-params", str(a.target_params)] if a.target_params else []), "--sensitivity", str(a.sens_file),
             "--batch-size", str(a.batch_size), *ft, "--pop-size", str(a.pop_size),
             "--generations", str(a.generations), "--allocation-budget", str(a.allocation_budget),
             "--seed", str(seed), "--device", "cpu", *cell.flags()]
    stem = f"{cell.name}-seed{seed}-{phase}"
    if a.table_only or not runs_here(cell, seed, a):
        keep = a.keep / f"{stem}.json"
        return json.loads(keep.read_text()) if keep.exists() else None
    return prune_run(flags, a.out / stem, a.keep / f"{stem}.json", a.out / "log.txt")


def runs_here(cell: Cell, seed: int, a) -> bool:
    """Whether this process may run ``cell`` at ``seed`` (``--run-cells``/``--run-seeds``); the rest of the table
    comes from the committed results, so two processes can split the missing runs without running one twice."""
    return (not a.run_cells or cell in a.run_cells) and (not a.run_seeds or seed in a.run_seeds)


def run_jobs(jobs: list, a, table: dict) -> None:
    """Run ``(cell, seed, phase)`` jobs ``a.jobs`` at a time (in order: an interrupted session leaves whole seeds)
    and file each result under its cell in ``table``."""
    with cf.ThreadPoolExecutor(max(1, a.jobs)) as pool:
        for (cell, seed, phase), res in zip(jobs, pool.map(lambda j: prune_one(*j[:2], a, j[2]), jobs)):
            if res is not None:
                table.setdefault(cell, {"finetuned": {}, "pruned": {}})[phase][seed] = res


def paired(vals: list, ref: list) -> dict:
    from scipy import stats

    n = min(len(vals), len(ref))
    diff = [v - r for v, r in zip(vals[:n], ref[:n])]
    out = {"n_pairs": n, "mean_diff_pt": 100 * statistics.mean(diff) if n else float("nan")}
    if n >= 2 and any(d != 0 for d in diff):
        out["wilcoxon_p"] = float(stats.wilcoxon(vals[:n], ref[:n]).pvalue)
    return out


def main_effects(kd: dict) -> dict:
    """Main effects of the factorial design: each level of each factor against the reference's level of that factor
    (allocation: search and uniform vs sensitivity; channels: ga vs l1; refit: on vs off), paired over the other
    factors and the seeds; ``kd`` maps (allocation, selector, refit) to {seed: accuracy} (KD cells only)."""
    effects = {}
    for i, factor in enumerate(("allocation", "channels", "refit")):
        lo = REFERENCE[i]
        for hi in dict.fromkeys(k[i] for k in kd if k[i] != lo):
            pairs = []
            for key, per_seed in kd.items():
                if key[i] != lo:
                    continue
                other = tuple(hi if j == i else v for j, v in enumerate(key))
                pairs += [(per_seed[sd], kd[other][sd]) for sd in per_seed if other in kd and sd in kd[other]]
            if pairs:
                effects[f"{factor}: {hi} vs {lo}"] = {**paired([b for _, b in pairs], [a for a, _ in pairs]),
                                                      "wins": sum(b > a for a, b in pairs)}
    return effects


def vs_reference(v: dict | None) -> str:
    """A row's paired comparison with the reference cell, as the table prints it."""
    if v is None:
        return "reference"
    if not v["n_pairs"]:
        return "reference not run"
    return f"{v['mean_diff_pt']:+.2f} pt" + (f", p={v['wilcoxon_p']:.2f}" if "wilcoxon_p" in v else "")


def fmt(vals: list) -> str:
    if not vals:
        return "not run"
    if len(vals) == 1:
        return f"{100 * vals[0]:.2f} %"
    return f"{100 * statistics.mean(vals):.2f} ± {100 * statistics.stdev(vals):.2f} %"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default=str(RESULTS / "vgg16_w0.25_e60_cifar10.pt"))
    ap.add_argument("--data", default=None, help="default: imagefolder:<shared cifar10-jpeg.tar.gz>")
    ap.add_argument("--target-macs", type=float, default=0.33)
    ap.add_argument("--target-params", type=float, default=0.125, help="0: no parameter budget (ResNet-56)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--allocations", default="sensitivity,search")
    ap.add_argument("--selectors", default="l1,ga")
    ap.add_argument("--refit", default="off,on")
    ap.add_argument("--at-weight", type=float, default=50.0,
                    help="attention-transfer weight of the KD+AT cell (0: no AT cell); our AT term sums the squared "
                         "distance of L2-normalised maps over spatial positions, so Zagoruyko & Komodakis' beta=1000 "
                         "(a mean over positions, halved) is 500/(H*W) per stage: 0.5 to 125 on 32x32 VGG")
    ap.add_argument("--extra-cells", default="",
                    help="more cells, each allocation/selector/on|off[/at-weight[/fitness]] (comma-separated), run "
                         "at every seed beside the grid, e.g. sensitivity/ga/on/50/reconstruction-refit")
    ap.add_argument("--long-cells", default="sensitivity/l1/on/50",
                    help="cells (same form) run once (seed 0) with --long-finetune-epochs final KD epochs")
    ap.add_argument("--long-finetune-epochs", type=int, default=0, help="0: no long runs")
    ap.add_argument("--after-prune", action="store_true", help="also the prune-only twin of every cell")
    ap.add_argument("--finetune-steps", type=int, default=30)
    ap.add_argument("--finetune-epochs", type=int, default=2)
    ap.add_argument("--pop-size", type=int, default=50)
    ap.add_argument("--generations", type=int, default=60)
    ap.add_argument("--allocation-budget", type=int, default=60)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--jobs", type=int, default=2, help="prune runs side by side (1 thread each when > 1)")
    ap.add_argument("--out", default="runs/ablation")
    ap.add_argument("--tag", default="_vgg16_w0.25_e60")
    ap.add_argument("--table-only", action="store_true", help="the table of the runs finished so far")
    ap.add_argument("--run-cells", default="",
                    help="run only these cells (same form, comma-separated); the others are read from the committed "
                         "results, so parallel processes can split the missing runs")
    ap.add_argument("--run-seeds", default="", help="run only these seeds (comma-separated), likewise")
    a = ap.parse_args()
    try:
        a.run_seeds = {int(s) for s in a.run_seeds.split(",") if s.strip()}
    except ValueError:
        print(f"error: --run-seeds '{a.run_seeds}' is not a comma-separated list of integers", file=sys.stderr)
        sys.exit(2)
    a.run_cells = {Cell.parse(c) for c in a.run_cells.split(",") if c.strip()}
    a.data = a.data or f"imagefolder:{shared_cifar10()}"
    a.out, a.keep = Path(a.out), RESULTS / f"ablation{a.tag}"
    a.out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    a.sens_file = a.keep / "sensitivity.json"  # committed with the runs: every session prunes on the same curves
    if not a.sens_file.exists() and not a.table_only:
        sens_dir = a.out / "sensitivity"
        run(evoprune_cmd("--quiet", "sensitivity", "--checkpoint", a.checkpoint, "--data", a.data, "--device", "cpu",
                         "--batch-size", str(a.batch_size), "--out", str(sens_dir), "--overwrite"), a.out / "log.txt")
        a.keep.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(sens_dir / "sensitivity.json", a.sens_file)
    cells = [Cell(*c) for c in itertools.product(a.allocations.split(","), a.selectors.split(","),
                                                  a.refit.split(","))]
    # the reference and its opposite corner first: every flag is exercised in the first minutes of a long run
    corner = cells[-1]
    cells.sort(key=lambda c: 0 if c.factors == REFERENCE else 1 if c == corner else 2)
    grid = list(cells)
    cells += [c for c in dict.fromkeys(Cell.parse(c) for c in a.extra_cells.split(",") if c.strip())
              if c not in grid]  # a cell named twice, or already in the grid, runs once
    if a.jobs > 1:
        os.environ["OMP_NUM_THREADS"] = "1"
    table: dict = {}
    run_jobs([(cell, seed, phase) for seed in range(a.seeds) for cell in cells
              for phase in (("finetuned", "pruned") if a.after_prune else ("finetuned",))], a, table)
    # KD + AT on the best grid cell after fine-tuning (by mean over its seeds)
    done = [c for c in grid if len(table.get(c, {}).get("finetuned", ())) == a.seeds]
    if a.at_weight and done:
        best = max(done, key=lambda c: statistics.mean(x["final"]["test_top1"] for x in table[c]["finetuned"].values()))
        run_jobs([(replace(best, at=a.at_weight), seed, "finetuned") for seed in range(a.seeds)], a, table)
    # the long fine-tunes: named cells, seed 0, the same pruning with --long-finetune-epochs final KD epochs
    run_jobs([(Cell.parse(c, a.long_finetune_epochs), 0, "finetuned") for c in a.long_cells.split(",")
              if c.strip() and a.long_finetune_epochs], a, table)
    ref = table.get(Cell(*REFERENCE), {"finetuned": {}})
    ref_by_seed = {s: r["final"]["test_top1"] for s, r in ref["finetuned"].items()}
    rows, base = [], None
    for cell, row in table.items():
        ft = {s: r["final"]["test_top1"] for s, r in sorted(row["finetuned"].items())}
        pr = {s: r["final"]["test_top1"] for s, r in sorted(row["pruned"].items())}
        any_run = next(iter(row["finetuned"].values()), None) or next(iter(row["pruned"].values()))
        base = any_run["base"]
        common = sorted(set(ft) & set(ref_by_seed))
        # inside the pipeline: each unit's calibration accuracy right after it was pruned (and refit), before its
        # KD steps, averaged over units and seeds; and the refit's relative reconstruction error of the consumers
        units = [u for r in row["finetuned"].values() for u in r["units"]]
        refit = [c for u in units for c in (u.get("refit") or {}).values()]
        rows.append({"cell": cell.name, "allocation": cell.allocation, "selector": cell.selector, "refit": cell.refit,
                     "at_weight": cell.at, "finetune_epochs": cell.epochs or a.finetune_epochs,
                     "unit_steps": cell.steps_per_unit(a.finetune_steps),
                     "units": len(any_run["order"]),  # each gets the per-unit steps: the fine-tune's optimiser steps
                     "fitness": cell.fitness or None, "seeds": len(ft),
                     "per_seed_after_finetune": ft, "per_seed_after_prune": pr,
                     "mean_after_finetune": statistics.mean(ft.values()) if ft else None,
                     "mean_unit_acc_after_prune": statistics.mean(u["calib_acc_after_prune"] for u in units)
                     if units else None,
                     "refit_rel_error": {"before": statistics.mean(c["rel_error_before"] for c in refit),
                                         "after": statistics.mean(c["rel_error_after"] for c in refit)}
                     if refit else None,
                     "macs_reduction": any_run["final"]["macs_reduction"],
                     "params_reduction": any_run["final"]["params_reduction"],
                     "mean_wall_time_s": statistics.mean(r["wall_time_s"] for r in row["finetuned"].values())
                     if row["finetuned"] else None,
                     "vs_reference": paired([ft[s] for s in common], [ref_by_seed[s] for s in common])
                     if cell != Cell(*REFERENCE) else None})
    rows.sort(key=lambda r: -(r["mean_after_finetune"] or 0))
    kd = {(r["allocation"], r["selector"], r["refit"]): r["per_seed_after_finetune"] for r in rows
          if Cell(r["allocation"], r["selector"], r["refit"]).name == r["cell"]}  # the grid's own cells only
    effects = main_effects(kd)
    result = {"checkpoint": a.checkpoint, "base": base, "reference": Cell(*REFERENCE).name,
              "settings": {k: str(v) for k, v in vars(a).items()}, "rows": rows, "main_effects": effects,
              "invocation_wall_time_s": time.time() - t0, "machine": machine()}
    save(f"ablation{a.tag}.json", result)
    twins = any(r["per_seed_after_prune"] for r in rows)  # the prune-only column only when --after-prune ran
    head = ["allocation", "channels", "refit", "KD term", "seeds", "after fine-tune", "vs sensitivity + l1 (paired)",
            "per unit, right after pruning it", "consumers' reconstruction error (refit)"]
    head += (["after pruning, no fine-tune"] if twins else []) + ["MACs", "params", "min/run"]
    body = []
    for r in rows:
        v, err = r["vs_reference"], r["refit_rel_error"]
        vs = vs_reference(v)
        kd_term = ("KD + AT " + format(r["at_weight"], "g") if r["at_weight"] else "KD") + (
            f", {r['finetune_epochs']} epochs" if r["finetune_epochs"] != a.finetune_epochs else "") + (
            f", {r['unit_steps']} steps per unit" if r.get("unit_steps", a.finetune_steps) != a.finetune_steps else "")
        body.append([r["allocation"], r["selector"] + (f" ({r['fitness']})" if r["fitness"] else ""), r["refit"],
                     kd_term, r["seeds"], fmt(list(r["per_seed_after_finetune"].values())), vs,
                     f"{100 * r['mean_unit_acc_after_prune']:.2f} %",
                     f"{err['before']:.3f} -> {err['after']:.3f}" if err else ""]
                    + ([fmt(list(r["per_seed_after_prune"].values()))] if twins else [])
                    + [f"{r['macs_reduction']:.2f}x", f"{r['params_reduction']:.2f}x",
                       f"{r['mean_wall_time_s'] / 60 if r['mean_wall_time_s'] else float('nan'):.1f}"])
    md = markdown_table(head, body)
    if effects:
        md.append("")
    for k, e in effects.items():
        md.append(f"- main effect, {k}: {e['mean_diff_pt']:+.2f} pt over {e['n_pairs']} pairs (other factors and seed "
                  f"equal), better in {e['wins']}" + (f", Wilcoxon p = {e['wilcoxon_p']:.3g}" if "wilcoxon_p" in e else ""))
    if base:
        md.append(f"\nBaseline `{os.path.relpath(a.checkpoint, ROOT)}`: test {100 * base['test_top1']:.2f} %, {base['macs']:,} MACs, "
                  f"{base['params']:,} params. Fine-tune: {a.finetune_steps} KD steps per unit + {a.finetune_epochs} "
                  f"KD epochs; GA {a.pop_size} x {a.generations}; allocation search {a.allocation_budget} evaluations. "
                  + (f"Paired Wilcoxon over seeds (n = {a.seeds} cannot reach p < 0.05: its smallest two-sided p "
                     f"is {2 ** (1 - a.seeds):.2g})." if 1 < a.seeds < 6 else
                     "Paired Wilcoxon over seeds." if a.seeds > 1 else "One seed: no test."))
    (RESULTS / f"ablation{a.tag}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
