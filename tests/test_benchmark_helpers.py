"""The helpers the benchmark scripts share (benchmarks/_common.py): what their comparisons stand on."""
import hashlib
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from _common import step_finetune  # noqa: E402


def test_step_finetune_takes_exactly_the_steps_asked_and_trains_a_frozen_copy(tmp_path):
    from evoprune.data import load_dataset, make_loaders
    from evoprune.distill import ce_loss
    from evoprune.models import create_model

    torch.manual_seed(0)
    loaders = make_loaders(load_dataset("mini-cifar10"), batch_size=256, calib_size=32)
    model = create_model("vgg11", width=0.125)
    for p in model.parameters():  # as a copy of a KD teacher arrives: frozen
        p.requires_grad_(False)
    before = [p.detach().clone() for p in model.parameters()]
    calls = []
    base = ce_loss()

    def counting(m, x, y):
        calls.append(len(y))
        return base(m, x, y)

    steps = len(loaders.train) + 2  # across an epoch boundary: the budget is steps, not epochs
    step_finetune(model, loaders, steps, 0.01, counting, state=tmp_path / "state.pt")
    assert len(calls) == steps
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters()) if a.ndim > 1)


def test_reproduction_table_reads_the_committed_results():
    import json

    from _common import RESULTS
    from reproduction_table import rows_from, welch

    rows, base = rows_from("vgg16_w0.25_e60")
    rep = json.loads((RESULTS / "reproduce_cifar10_vgg16_w0.25_e60.json").read_text())
    assert base == rep["base"]["test_top1"] and rows[0]["run"] == "baseline"
    kinds = {r["kind"] for r in rows}
    assert {"ours", "peer", "control", "scratch"} <= kinds
    ga = next(r for r in rows if r["run"].startswith("ours: GA"))
    assert ga["per_seed"] == rep["selectors"][0]["per_seed_after_finetune"]
    assert welch([0.80, 0.81, 0.82], [0.80, 0.81, 0.82])["p_value"] == 1.0 and welch([0.8], [0.7, 0.71]) is None
    assert rows_from("no-such-tag") == ([], None)


def test_benchmark_tables_rebuild_from_their_committed_json():
    """Each benchmark's markdown comes from its JSON alone: rebuilt now, it is the committed .md (blanks aside)."""
    import json
    import re

    import allocation_search
    import compare_strategies
    import families
    import peer_torch_pruning
    import suite_table
    from _common import RESULTS

    def norm(text: str) -> str:
        return re.sub(r"\| +\|", "||", re.sub(r"\| +\|", "||", text)).strip()

    def load(name: str) -> dict:
        return json.loads((RESULTS / name).read_text())

    built = {"suite_table.md": suite_table.markdown(load("suite_table.json")),
             "allocation_search.md": "\n".join(allocation_search.markdown(load("allocation_search.json"))),
             "families.md": "\n".join(families.markdown(load("families.json")["rows"])),
             "compare_strategies.md": compare_strategies.table(load("compare_strategies.json")),
             "peer_torch_pruning_vgg16_w0.25_e60.md": "\n".join(peer_torch_pruning.markdown(
                 load("peer_torch_pruning_vgg16_w0.25_e60.json")["table"]))}
    for name, text in built.items():
        assert norm(text) == norm((RESULTS / name).read_text()), name
        assert text.count("\n|---") == 1 or name == "compare_strategies.md"


def test_ablation_main_effects_pair_every_level_with_the_reference_level():
    from ablation import main_effects, vs_reference

    kd = {("sensitivity", "l1", "on"): {"0": 0.80, "1": 0.82},
          ("uniform", "l1", "on"): {"0": 0.83, "1": 0.81},
          ("search", "l1", "on"): {"0": 0.79},
          ("sensitivity", "l1", "off"): {"1": 0.80}}
    eff = main_effects(kd)
    assert set(eff) == {"allocation: uniform vs sensitivity", "allocation: search vs sensitivity", "refit: on vs off"}
    uni = eff["allocation: uniform vs sensitivity"]
    assert uni["n_pairs"] == 2 and uni["wins"] == 1 and abs(uni["mean_diff_pt"] - 1.0) < 1e-9
    assert eff["allocation: search vs sensitivity"]["n_pairs"] == 1  # only seed 0 ran under search
    on = eff["refit: on vs off"]
    assert on["n_pairs"] == 1 and abs(on["mean_diff_pt"] - 2.0) < 1e-9  # paired by seed: seed 1 only
    assert vs_reference(None) == "reference"
    assert vs_reference({"n_pairs": 0, "mean_diff_pt": float("nan")}) == "reference not run"
    assert vs_reference({"n_pairs": 2, "mean_diff_pt": 1.0, "wilcoxon_p": 0.5}) == "+1.00 pt, p=0.50"


def test_peer_budgets_from_a_committed_reproduction_carry_its_gas_seeds():
    import json
    import statistics

    from _common import RESULTS
    from peer_torch_pruning import budgets_from_reproduction

    path = RESULTS / "reproduce_cifar10_resnet56_e60.json"
    rep = json.loads(path.read_text())
    ga = next(r for r in rep["selectors"] if r["selector"] == "ga")
    budgets = budgets_from_reproduction(path, steps_per_epoch=382)
    assert [b["test_top1"] for b in budgets] == ga["per_seed_after_finetune"]
    assert {b["seed"] for b in budgets} == set(range(len(budgets)))
    b = budgets[0]
    assert b["units"] == 28 and b["steps"] == 28 * 30 + 2 * 382  # the README's 1,604 optimiser steps
    assert [b["after_prune_top1"] for b in budgets] == ga["per_seed_after_prune"]  # each seed its own twin
    mean_after = statistics.mean(b["after_prune_top1"] for b in budgets)
    assert abs(mean_after - statistics.mean(ga["per_seed_after_prune"])) < 1e-12


def test_ablation_cell_with_a_floor_runs_prune_with_min_keep_ratio():
    from ablation import Cell

    cell = Cell.parse("sensitivity@0.3/l1/on")
    flags = cell.flags()
    assert flags[:4] == ["--allocation", "sensitivity", "--min-keep-ratio", "0.3"] and "--refit" in flags
    assert cell.name == "sensitivity@0.3-l1-refiton"
    assert Cell.parse("uniform/l1/off").flags()[:3] == ["--allocation", "uniform", "--selector"]


def test_ablation_cell_named_extras_set_the_fine_tune_schedule(monkeypatch, tmp_path):
    import types

    import pytest

    import ablation
    from ablation import Cell

    cell = Cell.parse("uniform/l1/on/0/epochs=4/unit-steps=0")
    assert (cell.epochs, cell.unit_steps, cell.at, cell.fitness) == (4, 0, 0.0, "")
    assert cell.name == "uniform-l1-refiton-ft4-us0"
    old = Cell.parse("sensitivity/ga/on/50/reconstruction-refit")  # the committed runs' names do not change
    assert old.name == "sensitivity-ga-refiton-at50-fitreconstruction-refit" and old.unit_steps is None
    for bad in ("uniform/l1/on/0/bogus=1", "uniform/l1/on/0/epochs=-1", "uniform/l1/on/unit-steps=x"):
        with pytest.raises(SystemExit) as e:
            Cell.parse(bad)
        assert e.value.code == 2
    seen = []
    monkeypatch.setattr(ablation, "prune_run", lambda flags, *rest: seen.append(flags) or {})
    a = types.SimpleNamespace(finetune_steps=30, finetune_epochs=2, checkpoint="c.pt", data="d", target_macs=0.5,
                              target_params=0, sens_file="s.json", batch_size=128, pop_size=4, generations=2,
                              allocation_budget=4, table_only=False, out=tmp_path, keep=tmp_path,
                              run_cells=set(), run_seeds=set())
    for c in (cell, Cell.parse("uniform/l1/on")):
        ablation.prune_one(c, 0, a)
    steps = [(f[f.index("--finetune-steps") + 1], f[f.index("--finetune-epochs") + 1]) for f in seen]
    assert steps == [("0", "4"), ("30", "2")]
    # --run-cells/--run-seeds: a run outside them is only read back (committed copy or nothing), never run
    seen.clear()
    (tmp_path / "uniform-l1-refiton-seed1-finetuned.json").write_text('{"final": {"test_top1": 0.5}}')
    a.run_cells, a.run_seeds = {cell}, {2}
    got = [ablation.prune_one(c, s, a) for c, s in ((cell, 2), (cell, 1), (Cell.parse("uniform/l1/on"), 1),
                                                     (Cell.parse("uniform/l1/on"), 2))]
    assert len(seen) == 1 and got[1] is None and got[2] == {"final": {"test_top1": 0.5}} and got[3] is None


def test_reproduction_table_counts_each_ablation_cells_own_optimiser_steps(monkeypatch):
    import reproduction_table

    def cell(name, units, unit_steps, epochs):
        return {"cell": name, "allocation": "uniform", "selector": "l1", "refit": "on", "at_weight": 0.0,
                "finetune_epochs": epochs, "unit_steps": unit_steps, "units": units, "fitness": None,
                "per_seed_after_finetune": {"0": 0.87, "1": 0.88}, "macs_reduction": 2.0, "params_reduction": 2.0,
                "mean_wall_time_s": 60.0}

    files = {"peer_torch_pruning_t.json": {"table": {"baseline": {"test_top1": 0.89},
                                                     "ours": {"steps": 1604, "steps_per_epoch": 382}}},
             "ablation_t.json": {"settings": {"finetune_epochs": "2", "finetune_steps": "30"},
                                 "rows": [cell("uniform-l1-refiton", 30, 30, 2),
                                          cell("uniform-l1-refiton-ft4-us0", 30, 0, 4)]}}
    monkeypatch.setattr(reproduction_table, "load", files.get)
    rows, base = reproduction_table.rows_from("t")
    ours = {r["run"]: r["fine_tune"] for r in rows if r["kind"] == "ours"}
    assert base == 0.89
    assert ours["ours (ablation): uniform + l1 + refit on + KD"] == "1,664 steps"  # 30 x 30 + 2 x 382
    assert ours["ours (ablation): uniform + l1 + refit on + KD, 0 KD steps per unit, **4-epoch** KD fine-tune"] \
        == "4 epochs (1,528 steps)"


def test_scratch_control_keeps_its_training_state_where_a_session_can_commit_it(monkeypatch, tmp_path):
    """The scratch control trains for hours: its resumable state lives under benchmarks/results (committed between
    sessions), is what fit() resumes from, and goes once the run's result is written."""
    import types

    import evoprune.train
    import peer_torch_pruning as peer
    from evoprune.data import load_dataset, make_loaders
    from evoprune.models.checkpoint import load_model

    import _common

    for mod in (peer, _common):
        monkeypatch.setattr(mod, "RESULTS", tmp_path / "results")
    manifest = tmp_path / "results" / "CHECKPOINTS.sha256"
    manifest.parent.mkdir()
    manifest.write_text("00  other.pt\n")
    seen = {}

    def fake_fit(model, loaders, cfg, loss_fn=None, state_path=None, **kw):
        seen["state"], seen["epochs"] = Path(state_path), cfg.epochs
        Path(state_path).write_bytes(b"state")  # what an interrupted run leaves for the next session
        if seen.setdefault("interrupt", True):
            raise KeyboardInterrupt  # kill -TERM: fit saved its state and stops

    monkeypatch.setattr(evoprune.train, "fit", fake_fit)
    base, meta = load_model(str(Path(peer.__file__).resolve().parents[1] / "evoprune/assets/vgg16_w0.25_cifar10.pt"))
    loaders = make_loaders(load_dataset("mini-cifar10"), batch_size=64, calib_size=32)
    example = torch.zeros(1, 3, 32, 32)
    macs, params = peer.cost(base, example)
    a = types.SimpleNamespace(checkpoint="ckpt/base.pt", table_only=False, base_epochs=3, base_lr=0.05)
    budget = {"pruned": meta.get("pruned") or {}, "finetune_epochs": 2, "base_macs": macs, "base_params": params,
              "steps": 10}
    with pytest.raises(KeyboardInterrupt):
        peer.one_run("scratch", 1, a, base, dict(meta, epochs=None), loaders, example, budget, tmp_path / "out")
    assert seen["state"] == tmp_path / "results" / "peer_base" / "partial" / "scratch-seed1.train_state.pt"
    digest = hashlib.sha256(b"state").hexdigest()  # the interrupted state is committed with its sha256 line
    assert manifest.read_text() == f"00  other.pt\n{digest}  peer_base/partial/scratch-seed1.train_state.pt\n"
    seen["interrupt"] = False
    res = peer.one_run("scratch", 1, a, base, dict(meta, epochs=None), loaders, example, budget, tmp_path / "out")
    assert seen["epochs"] == 3 + 2 and res["epochs"] == 5
    assert not seen["state"].exists()  # the result replaced it, and its line went with it
    assert manifest.read_text() == "00  other.pt\n"
    assert (tmp_path / "results" / "peer_base" / "scratch-seed1.json").exists()


def test_peer_margin_counts_our_rows_with_no_more_fine_tune_steps_than_the_peers():
    from reproduction_table import step_count

    assert step_count("1,604 steps") == 1604 and step_count("4 epochs (1,528 steps)") == 1528
    assert step_count("60 epochs") is None and step_count("") is None


def test_an_interrupted_prune_run_is_carried_to_the_next_session_and_dropped_when_done(monkeypatch, tmp_path):
    """A run stopped by kill -TERM leaves its resumable folder (no plots) under results/.../partial with sha256
    lines; on a fresh machine (no run folder) the next prune_run resumes from it, and the finished run removes it."""
    import _common

    results = tmp_path / "results"
    monkeypatch.setattr(_common, "RESULTS", results)
    keep, out = results / "ablation_x" / "cell-seed0-finetuned.json", tmp_path / "runs" / "cell-seed0-finetuned"
    calls = []

    def interrupted(cmd, log=None):
        calls.append(cmd)
        (out / "state").mkdir(parents=True)
        (out / "state" / "model_003.pt").write_bytes(b"unit 3")
        (out / "finetune_state.pt").write_bytes(b"step 10")
        (out / "trajectory.png").write_bytes(b"png")
        sys.exit("command failed (130)")

    monkeypatch.setattr(_common, "run", interrupted)
    with pytest.raises(SystemExit):
        _common.prune_run(["--seed", "0"], out, keep)
    carry = results / "ablation_x" / "partial" / "cell-seed0-finetuned"
    assert sorted(p.relative_to(carry).as_posix() for p in carry.rglob("*") if p.is_file()) == \
        ["finetune_state.pt", "state/model_003.pt"]
    lines = (results / "CHECKPOINTS.sha256").read_text().splitlines()
    assert lines == [f"{hashlib.sha256(b'step 10').hexdigest()}  ablation_x/partial/cell-seed0-finetuned/finetune_state.pt",
                     f"{hashlib.sha256(b'unit 3').hexdigest()}  ablation_x/partial/cell-seed0-finetuned/state/model_003.pt"]

    import shutil

    shutil.rmtree(tmp_path / "runs")  # a fresh machine

    def finishes(cmd, log=None):
        calls.append(cmd)
        assert (out / "finetune_state.pt").read_bytes() == b"step 10"  # resumed from the carried folder
        (out / "results.json").write_text('{"final": 1}')

    monkeypatch.setattr(_common, "run", finishes)
    assert _common.prune_run(["--seed", "0"], out, keep) == {"final": 1}
    assert calls[0][-1] != "--resume" and calls[1][-1] == "--resume"
    assert not carry.exists() and (results / "CHECKPOINTS.sha256").read_text() == ""
    assert _common.prune_run(["--seed", "0"], out, keep) == {"final": 1} and len(calls) == 2  # kept: not rerun


def test_committed_checkpoints_match_their_sha256_manifest():
    """Every .pt under benchmarks/results (baselines, pruned nets, carried partial runs) has its line, and only
    those have one: a session that commits a changed state without its line fails here, not on a user's machine."""
    from _common import RESULTS

    lines = dict(reversed(ln.split(None, 1)) for ln in (RESULTS / "CHECKPOINTS.sha256").read_text().splitlines()
                 if ln.strip())
    on_disk = {p.relative_to(RESULTS).as_posix(): p for p in RESULTS.rglob("*.pt")}
    assert sorted(lines) == sorted(on_disk)
    for name, path in on_disk.items():
        assert hashlib.sha256(path.read_bytes()).hexdigest() == lines[name], f"{name} changed; run record_sha256"
