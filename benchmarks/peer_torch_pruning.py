"""What a practitioner would otherwise run: Torch-Pruning on the same baseline, data split and KD fine-tune loop.

For one finished ``evoprune prune`` run directory of ours (``--ours``; its MACs, params and optimiser steps are the
budget), on the same baseline checkpoint, the same calibration/training split, batch size and the same KD loss
(:func:`evoprune.distill.kd_loss`, teacher = the baseline) through the same loop (:func:`evoprune.train.fit`):

* ``tp-l1-uniform``: Torch-Pruning 1.6 ``MetaPruner`` + ``MagnitudeImportance(p=1)``, one ratio for every layer
  (Li et al.'s L1 filter pruning, the "ten lines" of its README);
* ``tp-group-global``: ``GroupMagnitudeImportance`` with ``global_pruning=True`` (ratios found by the importance);

each bisected on the pruning ratio to our pruned model's MACs (``@macs``) and, separately, to its parameters
(``@params``), then fine-tuned for exactly as many optimiser steps as our pipeline took (per-unit steps included:
``finetune_steps x units + finetune_epochs x steps per epoch``), one cosine schedule at our fine-tune LR. Liu et
al.'s (2019) controls, with ``--controls``:

* ``scratch``: our pruned architecture, freshly initialised, trained with cross-entropy for the baseline's epochs
  plus our fine-tune epochs at the baseline's LR;
* ``continue``: the unpruned baseline trained on (cross-entropy) for the same steps as the fine-tunes.

Every run writes ``--out/<name>-seed<S>/result.json`` and a committed copy
``benchmarks/results/peer_<checkpoint stem>/<name>-seed<S>.json``, and is skipped when either exists (resumable on a fresh
machine; an interrupted training continues from its state file under ``--out``). The scratch control, hours of CPU
per seed, keeps its training state (model, optimizer, schedule, RNG; saved at every epoch end and on SIGTERM) in
``benchmarks/results/peer_<checkpoint stem>/partial/scratch-seed<S>.train_state.pt`` instead, so a session commits
it and the next one, on a fresh machine, continues from that step; its sha256 line in ``CHECKPOINTS.sha256`` follows
it (written when the training stops, dropped with the file once the run's result is written).
Results: ``benchmarks/results/peer_torch_pruning<tag>.json``.
``--table-only`` writes them from the runs x seeds finished so far (the others left out), e.g. after runs of one seed
were started separately.

    python benchmarks/peer_torch_pruning.py --checkpoint benchmarks/results/vgg16_w0.25_e60_cifar10.pt \\
        --ours runs/reproduce-w0.25/ga-seed0 --seeds 0,1,2 --controls
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from _common import RESULTS, machine, record_sha256, save, shared_cifar10, step_finetune

from evoprune.textable import markdown_table


def load_base(checkpoint: str):
    from evoprune.models.checkpoint import load_model

    model, meta = load_model(checkpoint)
    return model, meta


def our_budget(run_dir: Path, steps_per_epoch: int) -> dict:
    res = json.loads((run_dir / "results.json").read_text())
    cfg = res["config"]
    units = len(res["order"])
    steps = int(cfg["finetune_steps"]) * units + int(cfg["finetune_epochs"]) * steps_per_epoch
    return {"macs": res["final"]["macs"], "params": res["final"]["params"], "test_top1": res["final"]["test_top1"],
            "steps": steps, "finetune_lr": cfg.get("finetune_lr", 0.01), "finetune_epochs": cfg["finetune_epochs"],
            "units": units, "pruned": res["pruned"], "selector": cfg.get("selector"), "seed": cfg.get("seed")}


def budgets_from_reproduction(path: Path, steps_per_epoch: int) -> list:
    """The per-seed budgets of a committed ``reproduce_cifar10*.json`` (its GA rows) when the run directories are
    gone (a fresh machine): MACs, params and fine-tune settings from the file, the pruned shapes from the GA seed
    0 checkpoint the reproduction committed next to it (``<checkpoint stem>_pruned_ga.pt``; every seed prunes to
    the same per-unit counts)."""
    import torch

    rep = json.loads(path.read_text())
    ga = next(r for r in rep["selectors"] if r["selector"] == "ga")
    ckpt = RESULTS / f"{Path(rep['checkpoint']).stem}_pruned_ga.pt"
    pruned = torch.load(ckpt, map_location="cpu", weights_only=True)["meta"]["pruned"]
    st, fin = rep["settings"], rep["paper_method"]
    after = ga.get("per_seed_after_prune") or []  # the prune-only twins (adaptive BN), when the reproduction ran them
    steps = int(st["finetune_steps"]) * len(pruned) + int(st["finetune_epochs"]) * steps_per_epoch
    return [{"macs": fin["macs"], "params": fin["params"], "test_top1": acc, "steps": steps, "finetune_lr": 0.01,
             "finetune_epochs": int(st["finetune_epochs"]), "units": len(pruned), "pruned": pruned, "selector": "ga",
             "seed": seed, "after_prune_top1": after[seed] if seed < len(after) else None}
            for seed, acc in enumerate(ga["per_seed_after_finetune"])]


def tp_prune(model, example, variant: str, ratio: float):
    import copy

    import torch_pruning as tp
    from torch import nn

    m = copy.deepcopy(model)
    for p in m.parameters():  # Torch-Pruning traces through autograd: a frozen copy (the KD teacher) prunes nothing
        p.requires_grad_(True)
    imp = tp.importance.MagnitudeImportance(p=1) if variant == "tp-l1-uniform" else tp.importance.GroupMagnitudeImportance()
    last = [mod for mod in m.modules() if isinstance(mod, nn.Linear)][-1:]
    pruner = tp.pruner.MetaPruner(m, example, importance=imp, pruning_ratio=ratio, ignored_layers=last,
                                  global_pruning=variant == "tp-group-global")
    pruner.step()
    return m


def cost(model, example):
    from evoprune.models import count_params
    from evoprune.session import count_macs

    return count_macs(model, example.shape[1], example.shape[-1]), count_params(model)


def bisect_ratio(model, example, variant: str, what: str, target: float, iters: int = 14):
    """Largest-model ratio whose MACs (or params) are at most ``target``: bisection on the pruning ratio."""
    idx = 0 if what == "macs" else 1
    lo, hi = 0.0, 0.98
    best = None
    for _ in range(iters):
        mid = (lo + hi) / 2
        m = tp_prune(model, example, variant, mid)
        c = cost(m, example)
        if c[idx] <= target:
            best, hi = (mid, m, c), mid
        else:
            lo = mid
    if best is None:
        m = tp_prune(model, example, variant, hi)
        best = (hi, m, cost(m, example))
    if best[2][idx] > target:
        raise SystemExit(f"{variant}: no pruning ratio reaches {what} <= {target:,} (got {best[2][idx]:,})")
    return best


def finetune(model, teacher, loaders, steps: int, lr: float, state: Path, kd: bool = True):
    from evoprune.distill import ce_loss, kd_loss

    step_finetune(model, loaders, steps, lr, kd_loss(teacher) if kd else ce_loss(), state)


def scratch_state(keep: Path, seed: int) -> Path:
    """Where the scratch control's resumable training state is kept (committed between sessions)."""
    return keep.parent / "partial" / f"scratch-seed{seed}.train_state.pt"


def one_run(name: str, seed: int, a, base, meta, loaders, example, budget: dict, out: Path) -> dict:
    import torch

    from evoprune.device import seed_everything
    from evoprune.train import evaluate

    d = out / f"{name}-seed{seed}"
    keep = RESULTS / f"peer_{Path(a.checkpoint).stem}" / f"{name}-seed{seed}.json"  # committed: not rerun
    for done in (keep, d / "result.json"):
        if done.exists():
            return json.loads(done.read_text())
    if a.table_only:
        return None
    d.mkdir(parents=True, exist_ok=True)
    seed_everything(seed)
    loaders.train.seed = seed
    t0 = time.perf_counter()
    info: dict = {}
    if name.startswith("tp-"):
        variant, what = name.split("@")
        ratio, model, (macs, params) = bisect_ratio(base, example, variant, what, budget[what])
        info = {"pruning_ratio": ratio}
        after_prune = evaluate(model, loaders.test)["top1"]
        finetune(model, base, loaders, budget["steps"], budget["finetune_lr"], d / "finetune_state.pt")
    elif name == "scratch":
        from evoprune.models.checkpoint import build_from_meta

        model = build_from_meta(dict(meta, pruned=budget["pruned"]))  # fresh weights, our pruned shapes
        macs, params = cost(model, example)
        after_prune = float("nan")
        epochs = int(meta.get("epochs") or a.base_epochs) + int(budget["finetune_epochs"])
        info = {"epochs": epochs, "lr": a.base_lr}
        from evoprune.distill import ce_loss
        from evoprune.train import TrainConfig, fit

        state = scratch_state(keep, seed)
        state.parent.mkdir(parents=True, exist_ok=True)
        try:
            fit(model, loaders, TrainConfig(epochs=epochs, lr=a.base_lr, schedule="cosine"), loss_fn=ce_loss(),
                state_path=str(state), progress=False, evaluate_each_epoch=False)
        finally:  # stopped by kill -TERM or finished: the committed state and its sha256 line agree
            record_sha256(state)
    elif name == "continue":
        import copy

        model = copy.deepcopy(base)
        macs, params = cost(model, example)
        after_prune = evaluate(model, loaders.test)["top1"]
        finetune(model, None, loaders, budget["steps"], budget["finetune_lr"], d / "finetune_state.pt", kd=False)
    else:
        raise SystemExit(f"unknown run '{name}'")
    test = evaluate(model, loaders.test)["top1"]
    res = {"name": name, "seed": seed, "test_top1": test, "after_prune_top1": after_prune, "macs": macs,
           "params": params, "macs_reduction": budget["base_macs"] / macs, "params_reduction": budget["base_params"] / params,
           "steps": budget["steps"], "wall_time_s": time.perf_counter() - t0, **info}
    (d / "result.json").write_text(json.dumps(res, indent=1) + "\n")
    keep.parent.mkdir(parents=True, exist_ok=True)
    keep.write_text(json.dumps(res, indent=1) + "\n")
    if name == "scratch":
        scratch_state(keep, seed).unlink(missing_ok=True)  # the result replaces the resumable state
        record_sha256(scratch_state(keep, seed))
    torch.save({"note": "weights not kept"}, d / "done.pt")
    print(f"{name:>22} seed {seed}: test {100 * test:.2f} %  (after pruning {100 * after_prune:.2f} %)  "
          f"MACs x{res['macs_reduction']:.2f}  params x{res['params_reduction']:.2f}  {res['wall_time_s'] / 60:.1f} min",
          flush=True)
    return res


def stats_row(rows: list) -> dict:
    v = [r["test_top1"] for r in rows]
    return {"mean": statistics.mean(v), "std": statistics.stdev(v) if len(v) > 1 else 0.0, "n": len(v),
            "per_seed": v}


def markdown(table: dict) -> list:
    """The benchmark's table (baseline, ours, every peer run in the order run) and the Welch test's line."""
    def acc(r: dict) -> str:
        return f"{100 * r['mean']:.2f}" + (f" ± {100 * r['std']:.2f}" if r["n"] > 1 else "") + " %"

    def after_prune(r: dict) -> str:
        v = r.get("after_prune_top1")
        return "" if v is None or v != v else f"{100 * v:.2f} %"

    o = table["ours"]
    body = [["baseline", 1, f"{100 * table['baseline']['test_top1']:.2f} %", "", "1.00x", "1.00x"],
            [f"ours ({o['selector']})", o["n"], acc(o), after_prune(o), f"{o['macs_reduction']:.2f}x",
             f"{o['params_reduction']:.2f}x"]]
    for n, r in table.items():
        if n in ("baseline", "ours", "ours_vs_best_peer"):
            continue
        body.append([n, r["n"], acc(r), after_prune(r), f"{r['macs_reduction']:.2f}x", f"{r['params_reduction']:.2f}x"])
    md = markdown_table(["run", "seeds", "test acc. after fine-tune", "right after pruning", "MACs reduction",
                         "params reduction"], body)
    if "ours_vs_best_peer" in table:
        t = table["ours_vs_best_peer"]
        md.append(f"\nOurs vs the best Torch-Pruning variant at equal MACs ({t['peer']}): {t['difference_pt']:+.2f} pt, "
                  f"Welch t = {t['welch_t']:.2f}, p = {t['p_value']:.3g}; every fine-tune took {o['steps']} "
                  "optimiser steps.")
    return md


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--ours", required=True, nargs="+", help="finished evoprune prune run directories (one per seed), or the reproduction's committed "
                         "reproduce_cifar10<tag>.json when they are gone")
    ap.add_argument("--seeds", default="0,1,2", help="comma-separated seed ids (reproduce_cifar10.py and ablation.py take a count)")
    ap.add_argument("--runs", default="tp-l1-uniform@macs,tp-l1-uniform@params,tp-group-global@macs,"
                                      "tp-group-global@params")
    ap.add_argument("--controls", action="store_true", help="also the scratch and continue controls")
    ap.add_argument("--base-epochs", type=int, default=60, help="the baseline's epochs, when its metadata lacks them")
    ap.add_argument("--base-lr", type=float, default=0.05)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--out", default="runs/peer")
    ap.add_argument("--tag", default="")
    ap.add_argument("--table-only", action="store_true",
                    help="the table of the runs finished so far (a run x seed not finished is left out, not run)")
    a = ap.parse_args()
    import torch

    from evoprune.data import load_dataset, make_loaders
    from evoprune.train import evaluate

    torch.set_num_threads(max(1, torch.get_num_threads()))
    base, meta = load_base(a.checkpoint)
    base.eval()
    data = load_dataset(f"imagefolder:{shared_cifar10()}")
    loaders = make_loaders(data, batch_size=a.batch_size, seed=0)
    example = torch.zeros(1, data.in_channels, data.image_size, data.image_size)
    base_macs, base_params = cost(base, example)
    base_test = evaluate(base, loaders.test)["top1"]
    if len(a.ours) == 1 and a.ours[0].endswith(".json"):
        ours = budgets_from_reproduction(Path(a.ours[0]), len(loaders.train))
    else:
        ours = [our_budget(Path(r), len(loaders.train)) for r in a.ours]
    budget = dict(ours[0], base_macs=base_macs, base_params=base_params)
    names = [n for n in a.runs.split(",") if n] + (["scratch", "continue"] if a.controls else [])
    out = Path(a.out)
    results = {n: [r for s in a.seeds.split(",") if (r := one_run(n, int(s), a, base, meta, loaders, example, budget,
                                                                    out)) is not None] for n in names}
    results = {n: rows for n, rows in results.items() if rows}
    ours_after = [o["after_prune_top1"] for o in ours if o.get("after_prune_top1") is not None]
    table = {"baseline": {"test_top1": base_test, "macs": base_macs, "params": base_params},
             "ours": {"runs": [str(r) for r in a.ours], "selector": ours[0]["selector"],
                      **stats_row([{"test_top1": o["test_top1"]} for o in ours]),
                      "after_prune_top1": statistics.mean(ours_after) if ours_after else None,
                      "macs_reduction": base_macs / budget["macs"], "params_reduction": base_params / budget["params"],
                      "steps": budget["steps"], "steps_per_epoch": len(loaders.train)}}
    for n, rows in results.items():
        table[n] = {**stats_row(rows), "macs_reduction": statistics.mean(r["macs_reduction"] for r in rows),
                    "params_reduction": statistics.mean(r["params_reduction"] for r in rows),
                    "after_prune_top1": statistics.mean(r["after_prune_top1"] for r in rows),
                    "wall_time_s": sum(r["wall_time_s"] for r in rows)}
    peers = [n for n in table if n.startswith("tp-") and n.endswith("@macs")]
    if peers and len(ours) > 1:
        from scipy import stats

        best = max(peers, key=lambda n: table[n]["mean"])
        t = stats.ttest_ind([o["test_top1"] for o in ours], table[best]["per_seed"], equal_var=False)
        table["ours_vs_best_peer"] = {"peer": best, "welch_t": float(t.statistic), "p_value": float(t.pvalue),
                                      "difference_pt": 100 * (table["ours"]["mean"] - table[best]["mean"])}
    save(f"peer_torch_pruning{a.tag}.json", {"checkpoint": a.checkpoint, "table": table, "machine": machine(),
                                              "settings": vars(a)})
    md = markdown(table)
    (RESULTS / f"peer_torch_pruning{a.tag}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
