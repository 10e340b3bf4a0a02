"""Reproduce the paper's pipeline on CIFAR-10 (JPEG) and compare channel selectors fairly.

From a baseline trained with `evoprune train` (benchmarks/train_baseline.py):

1. `evoprune sensitivity` once; every run below reuses these curves (`--sensitivity`), so all selectors get the
   same per-unit keep ratios (allocated for `--target-macs` and `--target-params`) and the same pruning order;
2. the paper's method: `evoprune prune --selector ga` (two-step fitness, KD fine-tune);
3. selectors at identical ratios and identical fine-tune budget: ga vs l1 vs random, `--seeds` seeds each,
   accuracy (a) right after pruning with adaptive BN (no fine-tuning at all) and (b) after the fine-tune;
   `--prune-only-selectors` (e.g. thinet, the greedy on the GA's own stage-1 objective) get (a) only;
4. ablations with the GA: KD vs cross-entropy fine-tune; sensitivity order vs front-to-back order.

Writes benchmarks/results/reproduce_cifar10.{json,md} and a small final checkpoint. Every run is a normal
`evoprune` run directory under --out, resumable: rerun the same command after an interruption (a run stopped with
`kill -TERM` of its `evoprune prune` process is also kept, resumable, in the `_runs/partial/` folder for a fresh machine).

    python benchmarks/reproduce_cifar10.py --checkpoint benchmarks/results/vgg16_w0.25_cifar10.pt --seeds 3
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import shutil
import statistics
import time
from pathlib import Path

from _common import RESULTS, evoprune_cmd, machine, prune_run, run, save, shared_cifar10

from evoprune.textable import markdown_table


def prune_one(out: Path, a, extra: list, log: Path) -> dict:
    """One `evoprune prune` run (resumed if its directory exists, not rerun when its committed copy under
    ``benchmarks/results/reproduce_cifar10<tag>_runs/`` exists); returns results.json."""
    budget = ["--target-macs", str(a.target_macs), *(["--target-params", str(a.target_params)] if a.target_params else [])]
    flags = ["--checkpoint", a.checkpoint, "--data", a.data, *budget,
             "--sensitivity", str(a.sens_file), "--batch-size", str(a.batch_size),
             "--finetune-steps", str(a.finetune_steps), "--finetune-epochs", str(a.finetune_epochs),
             "--pop-size", str(a.pop_size), "--generations", str(a.generations), "--seeding", a.seeding,
             "--refit" if a.refit else "--no-refit", *extra]
    return prune_run(flags, out, a.keep / f"{out.name}.json", log)


def summary(rows: list, key: str) -> str:
    vals = [r[key] for r in rows]
    if len(vals) == 1:
        return f"{100 * vals[0]:.2f}"
    return f"{100 * statistics.mean(vals):.2f} ± {100 * statistics.stdev(vals):.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default=str(RESULTS / "vgg16_w0.25_cifar10.pt"))
    ap.add_argument("--data", default=None, help="default: imagefolder:<shared cifar10-jpeg.tar.gz>")
    ap.add_argument("--target-macs", type=float, default=0.33)
    ap.add_argument("--target-params", type=float, default=0.125,
                    help="also keep at most this fraction of the parameters (the paper: 8x fewer); 0 = no budget")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--selectors", default="ga,l1,random")
    ap.add_argument("--prune-only-selectors", default="",
                    help="comma list of further selectors measured right after pruning only (no fine-tuned runs)")
    ap.add_argument("--finetune-steps", type=int, default=30)
    ap.add_argument("--finetune-epochs", type=int, default=2)
    ap.add_argument("--pop-size", type=int, default=50)
    ap.add_argument("--generations", type=int, default=60)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--seeding", default="none", choices=["none", "greedy"],
                    help="the GA's start: none is the paper's (random); greedy is prune's default")
    ap.add_argument("--refit", action="store_true",
                    help="ThiNet's least-squares refit (prune's default); off by default here: the paper's method")
    ap.add_argument("--no-ablations", action="store_true")
    ap.add_argument("--long-finetune-epochs", default="",
                    help="comma list of epoch counts: also run the paper's method (ga, seed 0) with that many final "
                         "KD fine-tune epochs, each with its own target check (the comparison table keeps "
                         "--finetune-epochs)")
    ap.add_argument("--out", default="runs/reproduce")
    ap.add_argument("--jobs", type=int, default=2, help="prune runs side by side (1 thread each when > 1)")
    ap.add_argument("--table-only", action="store_true",
                    help="run nothing: tabulate the runs under --out that have finished")
    ap.add_argument("--tolerance-pt", type=float, default=0.5,
                    help="the target's accuracy allowance below the baseline (the issue's ResNet-56 target: 0.3)")
    ap.add_argument("--tag", default="", help="suffix of the result files (e.g. resnet20), so runs do not clobber")
    a = ap.parse_args()
    a.data = a.data or f"imagefolder:{shared_cifar10()}"
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    log = out / "log.txt"
    t0 = time.time()
    sens_dir = out / "sensitivity"
    a.keep = RESULTS / f"reproduce_cifar10{'_' + a.tag if a.tag else ''}_runs"  # committed: see prune_one
    a.sens_file = a.keep / "sensitivity.json"
    if not a.sens_file.exists() and (sens_dir / "sensitivity.json").exists():  # a run folder of an earlier layout
        a.keep.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(sens_dir / "sensitivity.json", a.sens_file)
    if not a.sens_file.exists() and not a.table_only:
        run(evoprune_cmd("--quiet", "sensitivity", "--checkpoint", a.checkpoint, "--data", a.data,
                         "--batch-size", str(a.batch_size), "--out", str(sens_dir), "--overwrite"), log)
        a.keep.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(sens_dir / "sensitivity.json", a.sens_file)
    jobs = []  # (key, run dir, extra flags); every run is independent once the sensitivity curves exist
    prune_only = [x for x in a.prune_only_selectors.split(",") if x]
    selectors = a.selectors.split(",")
    selectors += [x for x in prune_only if x not in selectors]
    for sel in selectors:
        for seed in range(a.seeds):
            for phase, extra in (("pruned_adaptive_bn", ["--finetune-steps", "0", "--finetune-epochs", "0"]),
                                 ("finetuned", [])):
                if phase == "finetuned" and sel in prune_only:
                    continue
                # later flags win in click: the phase's fine-tune settings override the defaults above
                jobs.append(((sel, phase, seed), out / f"{sel}-seed{seed}-{phase}",
                             ["--selector", sel, "--seed", str(seed), *extra]))
    if not a.no_ablations:
        for name, extra in (("ga-ce", ["--loss", "ce"]), ("ga-forward-order", ["--order", "forward"])):
            jobs.append(((name,), out / name, ["--selector", "ga", "--seed", "0", *extra]))
    long_epochs = {f"ga-finetune-{int(e)}ep": int(e) for e in a.long_finetune_epochs.split(",") if e.strip()}
    for name, epochs in long_epochs.items():
        jobs.append(((name,), out / name, ["--selector", "ga", "--seed", "0", "--finetune-epochs", str(epochs)]))
    if a.jobs > 1:  # several 1-thread runs side by side use small CPUs better than one multi-threaded run
        os.environ["OMP_NUM_THREADS"] = "1"
    # seed by seed (an interrupted session still leaves complete seeds for a --seeds N-1 table), the long GA runs
    # first within a seed; the ablations after seed 1
    def rank(i):
        key = jobs[i][0]
        if key[0] in long_epochs:  # the longest runs start first, so the two workers end together
            return (-1, -long_epochs[key[0]], i)
        return (key[2], 0 if key[0] == "ga" else 1, i) if len(key) == 3 else (1, 2, i)

    order = sorted(range(len(jobs)), key=rank)
    if a.table_only:  # the runs finished so far (an interrupted session): seeds counted per selector
        found = {i: next((p for p in (a.keep / f"{jobs[i][1].name}.json", jobs[i][1] / "results.json") if p.exists()),
                         None) for i in order}
        results = {i: json.loads(p.read_text()) for i, p in found.items() if p is not None}
    else:
        with cf.ThreadPoolExecutor(max(1, a.jobs)) as pool:
            futs = {i: pool.submit(prune_one, jobs[i][1], a, jobs[i][2], log) for i in order}
            results = {i: f.result() for i, f in futs.items()}
    runs: dict = {}
    ablations = {}
    long_runs: dict = {}
    for i, (key, rdir, _) in enumerate(jobs):
        if i not in results:
            continue
        res = results[i]
        if key[0] in long_epochs:
            long_runs[key[0]] = res
        elif len(key) == 1:
            ablations[key[0]] = res
        else:
            runs.setdefault(key[:2], []).append(res)
        print(f"{rdir.name}: test {res['final']['test_top1']:.4f}, MACs x{res['final']['macs_reduction']:.2f}, "
              f"params x{res['final']['params_reduction']:.2f}, {res['wall_time_s'] / 60:.1f} min", flush=True)
    if not runs:
        raise SystemExit(f"no finished run under {out} or {a.keep}: run without --table-only first")
    base = next(iter(runs.values()))[0]["base"]
    table = []
    for sel in selectors:
        ft, pr = runs.get((sel, "finetuned"), []), runs.get((sel, "pruned_adaptive_bn"), [])
        if not pr or not (ft or sel in prune_only):
            continue
        first = (ft or pr)[0]["final"]  # the reductions are the same for every run of the table
        s1 = [statistics.mean([u.get("stage1_error", float("nan")) for u in r["units"]]) for r in pr]
        table.append({"selector": sel, "seeds": len(pr) if len(ft) in (0, len(pr)) else f"{len(pr)} / {len(ft)}",
                      "after_prune": summary([r["final"] for r in pr], "test_top1"),
                      "after_finetune": summary([r["final"] for r in ft], "test_top1") if ft else None,
                      "mean_stage1_error": statistics.mean(s1),
                      "per_seed_after_prune": [r["final"]["test_top1"] for r in pr],
                      "per_seed_after_finetune": [r["final"]["test_top1"] for r in ft],
                      "macs_reduction": first["macs_reduction"], "params_reduction": first["params_reduction"],
                      "wall_time_s": statistics.mean(r["wall_time_s"] for r in (ft or pr))})
    result = {"checkpoint": a.checkpoint, "dataset": "CIFAR-10 (JPEG)", "base": base, "target_macs": a.target_macs,
              "target_params": a.target_params,
              "settings": {k: v for k, v in vars(a).items() if k not in ("sens_file", "keep")},
              "selectors": table,
              "ablations": {k: {"test_top1": v["final"]["test_top1"], "macs_reduction": v["final"]["macs_reduction"],
                                "params_reduction": v["final"]["params_reduction"]} for k, v in ablations.items()},
              "paper_method": runs[("ga", "finetuned")][0]["final"] if ("ga", "finetuned") in runs else None,
              "paper_method_long_finetune": [{"finetune_epochs": long_epochs[k], **v["final"],
                                              "wall_time_s": v["wall_time_s"]} for k, v in long_runs.items()],
              # compute actually spent (sum over the runs; they ran --jobs at a time), not this invocation's time
              "runs_wall_time_s": sum(r["wall_time_s"] for rs in runs.values() for r in rs)
              + sum(v["wall_time_s"] for v in ablations.values()) + sum(v["wall_time_s"] for v in long_runs.values()),
              "invocation_wall_time_s": time.time() - t0, "machine": machine()}
    stem = "reproduce_cifar10" + (f"_{a.tag}" if a.tag else "")
    save(f"{stem}.json", result)
    body = [[r["selector"], r["seeds"], f"{r['after_prune']} %",
             f"{r['after_finetune']} %" if r["after_finetune"] else "not run", f"{r['mean_stage1_error']:.4f}",
             f"{r['macs_reduction']:.2f}x", f"{r['params_reduction']:.2f}x"] for r in table]
    if ablations and ("ga", "finetuned") in runs:
        ref = runs[("ga", "finetuned")][0]["final"]
        body.append(["ablation reference: ga seed 0 (KD, sensitivity order)", 1, "", f"{100 * ref['test_top1']:.2f} %",
                     "", f"{ref['macs_reduction']:.2f}x", f"{ref['params_reduction']:.2f}x"])
    body += [[f"ablation {k} (seed 0)", 1, "", f"{100 * v['test_top1']:.2f} %", "", f"{v['macs_reduction']:.2f}x",
              f"{v['params_reduction']:.2f}x"] for k, v in result["ablations"].items()]
    md = markdown_table(["selector", "seeds", "test acc. right after pruning (adaptive BN)", "test acc. after fine-tune",
                         "mean stage-1 error", "MACs reduction", "params reduction"], body)
    md.append(f"\nBaseline: test {100 * base['test_top1']:.2f} %, {base['macs']:,} MACs, {base['params']:,} params.")
    # the target: the asked-for reductions (3x MACs and 8x params for VGG, 2x MACs for ResNet), rounded as
    # stated, and accuracy within --tolerance-pt of the baseline
    tol = a.tolerance_pt
    need = {"macs": round(1 / a.target_macs, 1), "params": round(1 / a.target_params, 1) if a.target_params else 0}
    goal = f">= {need['macs']:g}x MACs, " + (f">= {need['params']:g}x params, " if need["params"] else "")

    def verdict(final: dict, drop: float) -> str:
        ok = (drop >= -tol and final["macs_reduction"] >= need["macs"]
              and final["params_reduction"] >= need["params"])
        return f"target ({goal}>= baseline - {tol:g} pt): {'met' if ok else 'NOT met'}"

    if ("ga", "finetuned") in runs:
        accs = [r["final"]["test_top1"] for r in runs[("ga", "finetuned")]]
        f0 = runs[("ga", "finetuned")][0]["final"]
        d = 100 * (statistics.mean(accs) - base["test_top1"])
        md.append(f"Paper's method (GA + two-step fitness + KD, sensitivity order), {len(accs)} seed(s): test "
                  f"{summary([{'a': x} for x in accs], 'a')} % vs baseline {100 * base['test_top1']:.2f} % "
                  f"({d:+.2f} pt), {f0['macs_reduction']:.2f}x fewer MACs, {f0['params_reduction']:.2f}x fewer "
                  f"params; {verdict(f0, d)}.")
    for name, long_run in long_runs.items():
        f0 = long_run["final"]
        d = 100 * (f0["test_top1"] - base["test_top1"])
        md.append(f"Paper's method with a {long_epochs[name]}-epoch KD fine-tune (ga, seed 0): test "
                  f"{100 * f0['test_top1']:.2f} % vs baseline {100 * base['test_top1']:.2f} % ({d:+.2f} pt), "
                  f"{f0['macs_reduction']:.2f}x fewer MACs, {f0['params_reduction']:.2f}x fewer params, "
                  f"{long_run['wall_time_s'] / 60:.0f} min; {verdict(f0, d)}.")
    md.append(f"Compute: {result['runs_wall_time_s'] / 60:.0f} min summed over the prune runs ({a.jobs} side by side).")
    (RESULTS / f"{stem}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    for run_dir, suffix in (("ga-seed0-finetuned", ""), *((k, f"_ft{e}") for k, e in long_epochs.items())):
        model = out / run_dir / "model.pt"
        if model.exists() and model.stat().st_size <= 20 * 2**20:
            seeded = "_seeded" if a.seeding == "greedy" else ""  # the two GA starts must not share a file
            shutil.copyfile(model, RESULTS / f"{Path(a.checkpoint).stem}_pruned_ga{seeded}{suffix}.pt")


if __name__ == "__main__":
    main()
