"""The whole-network pruning problem (``problems/network_pruning.py``): decoding, exact costs, the error objective
against a physically pruned model, no side effects on the model, and the ``network`` problem through the CLI."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from evoprune.cli import main
from evoprune.errors import EvopruneError
from evoprune.checkpoint_problems import network_problem
from evoprune.problems.network_pruning import NetworkPruningProblem
from evoprune.pruning import flop_counter_macs

SMALL = dict(data="mini-cifar10", bn_batches=1, eval_batches=1, batch_size=64, threads=1)


@pytest.fixture(scope="module")
def problems(tiny_checkpoint):
    """One problem per encoding on the tiny VGG-11 (built once: loading data and tracing the model take seconds)."""
    return {enc: network_problem(checkpoint=str(tiny_checkpoint), representation=enc, **SMALL)
            for enc in ("ratios", "masks")}


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _accuracy(model, batches):
    with torch.no_grad():
        correct = sum(int((model(x).argmax(1) == y).sum()) for x, y in batches)
    return correct / sum(len(y) for _, y in batches)


def _adaptive_bn(model, xs):
    """Reference adaptive BN on a physically pruned copy: reset, cumulative average in train mode, back to eval."""
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    with torch.no_grad():
        for x in xs:
            model(x)
    model.eval()


@pytest.mark.parametrize("enc", ["ratios", "masks"])
def test_objectives_shapes_and_exact_costs(problems, enc):
    p = problems[enc]
    assert p.encoding == ("real" if enc == "ratios" else "binary") and p.representation == enc
    assert p.objectives == ("error", "macs") and p.weights == (-1.0, -1.0) and p.hv_ref == (1.0, 1.0)
    G = p.sample(np.random.default_rng(0), 4)
    assert G.shape == (4, p.n_var) and G.dtype == (np.float64 if enc == "ratios" else bool)
    assert np.array_equal(p.repair(G), G)  # samples are valid
    F = p.evaluate(G)
    assert F.shape == (4, 2) and F.dtype == np.float64
    assert np.all((F >= 0) & (F <= 1)) and len(np.unique(F[:, 1])) > 1  # spread over the cost range
    cm = p.cost_model
    for g, f in zip(G, F):
        masks = p.decode(g)
        assert list(masks) == p.unit_names and all(m.dtype == bool for m in masks.values())
        assert f[1] == cm.macs(masks) / cm.base_macs  # the same analytic number, exactly
    # ... and the analytic number is what FlopCounterMode counts on the physically pruned model
    pruned = p.space.apply(p.decode(G[0]))
    assert flop_counter_macs(pruned, p.space.input_shape) == round(F[0, 1] * cm.base_macs)


def test_error_matches_a_physically_pruned_model_with_adaptive_bn(problems):
    p = problems["ratios"]
    g = p.sample(np.random.default_rng(1), 1)[0]
    pruned = p.space.apply(p.decode(g))
    _adaptive_bn(pruned, p._bn_x)
    err = p.evaluate(g[None])[0, 0]
    assert abs(err - (1 - _accuracy(pruned, p._ev))) <= 1.0 / 64 + 1e-9  # at most one borderline image flips
    # the soft-mask forward (the fallback) agrees with the sliced one
    soft = NetworkPruningProblem(p.model, p.space, (p._bn_x, p._ev), threads=1,
                                 forward="soft", bn_batches=1, eval_batches=1)
    assert soft.forward_mode == "soft" and p.forward_mode == "sliced"
    assert abs(soft.evaluate(g[None])[0, 0] - err) <= 1.0 / 64 + 1e-9


def test_full_genome_is_the_unpruned_model(problems):
    p = problems["ratios"]
    plain = NetworkPruningProblem(p.model, p.space, ([], p._ev), bn_batches=0, eval_batches=1, threads=1)
    F = plain.evaluate(plain.full_genome()[None])
    assert F[0, 1] == 1.0
    assert F[0, 0] == pytest.approx(1 - _accuracy(p.model.eval(), p._ev), abs=1e-12)
    # with adaptive BN the statistics are re-estimated on one batch: close, not necessarily equal
    assert abs(p.evaluate(p.full_genome()[None])[0, 0] - F[0, 0]) < 0.15


def test_evaluation_leaves_the_model_untouched(problems):
    p = problems["masks"]
    model = p.model
    model.train()
    before = _state(model)
    modes = [m.training for m in model.modules()]
    momenta = [m.momentum for m in model.modules() if hasattr(m, "momentum")]
    p.clear_cache()
    p.evaluate(p.sample(np.random.default_rng(2), 2))
    after = _state(model)
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert modes == [m.training for m in model.modules()]
    assert momenta == [m.momentum for m in model.modules() if hasattr(m, "momentum")]
    assert not any(m._forward_pre_hooks for m in model.modules()) and torch.is_grad_enabled()
    model.eval()


def test_masks_encoding_repair_cache_and_consistency(problems):
    pm, pr = problems["masks"], problems["ratios"]
    bad = np.zeros((1, pm.n_var), dtype=bool)
    with pytest.raises(EvopruneError, match="repair"):
        pm.evaluate(bad)
    fixed = pm.repair(bad)
    assert np.array_equal(pm.counts_of_masks(fixed)[0], pm.min_keep) and not bad.any()  # input left alone
    # the same uniform decision in both encodings scores the same
    u_m, u_r = pm.uniform_genomes([0.5]), pr.uniform_genomes([0.5])
    assert np.array_equal(pm.evaluate(u_m), pr.evaluate(u_r))
    # repeated genomes are served from the cache
    pr.clear_cache()
    pr.evaluate(np.concatenate([u_r, u_r]))
    assert pr.cost()["evaluations"] == 1 and pr.cost()["seconds_per_evaluation"] > 0
    refs = pr.reference_points(ratios=(0.3, 0.6))
    assert refs["unpruned"].shape == (1, 2) and refs["uniform L1"].shape == (2, 2) and refs["unpruned"][0, 1] == 1


def test_reference_points_file_feeds_evoprune_plot(problems, tmp_path):
    from evoprune.plot import load_reference_points

    p = problems["ratios"]
    refs = p.save_reference_points(tmp_path / "ref.json", ratios=(0.5,))
    loaded = load_reference_points(tmp_path / "ref.json", p.objectives)
    assert set(loaded) == {"unpruned", "uniform L1"} and np.allclose(loaded["uniform L1"], refs["uniform L1"])


def test_scalarised_form_skips_infeasible_genomes(problems):
    from evoprune.strategies import run_strategy

    p = problems["ratios"]
    s = p.variant(objectives="error", max_macs=0.3)  # same model, space and batches: nothing reloaded
    assert s.objectives == ("error",) and s.hv_ref is None and s.space is p.space and s.threads == 1
    F = s.evaluate(s.full_genome()[None])
    assert F.shape == (1, 1) and F[0, 0] == pytest.approx(1.7) and s.cost()["evaluations"] == 0
    res = run_strategy("cmaes", s, 8, 0, pop_size=4)
    assert res.evaluations == 8 and res.best_fitness[0] <= 1.0  # found a feasible model


def test_projected_genomes_sit_on_the_budget_boundary(problems):
    p = problems["ratios"]
    s = p.variant(objectives="error", max_macs=0.3, max_params=0.4, constraint="project")
    rng = np.random.default_rng(0)
    G = np.vstack([s.sample(rng, 30), s.full_genome()[None], np.full((1, s.n_var), s.min_ratio)])
    fr = s.cost_fractions(G)
    assert np.all(fr["macs"] <= 0.3 + 1e-12) and np.all(fr["params"] <= 0.4 + 1e-12)  # every genome feasible ...
    # ... and maximal along its ray: a 10 % larger scale breaks a limit (unless every unit is already full)
    P = s.project(G)
    Gc = np.clip(G, s.min_ratio, 1.0)
    for g, r in zip(Gc, P):
        free = (r > s.min_ratio + 1e-9) & (r < 1.0 - 1e-9)
        if not free.any():
            continue
        t = float(np.median(r[free] / g[free]))
        assert np.allclose(r[free], np.clip(g * t, s.min_ratio, 1.0)[free])  # the genome's shape, scaled
        bigger = s._violation(s._fractions(s.counts_of_ratios(np.clip(g * t * 1.1, s.min_ratio, 1.0)[None])))
        assert bigger[0] > 0
    use = np.maximum(fr["macs"] / 0.3, fr["params"] / 0.4)
    assert use.min() > 0.85, use.min()  # rounding to whole channels of 8..64-channel units leaves little slack
    F = s.evaluate(G[:3])
    assert np.all(F[:, 0] <= 1.0) and s.cost()["infeasible_skipped"] == 0
    assert np.allclose(s.measure(G[:3])["error"], F[:, 0])  # measure scores the same projected allocation
    with pytest.raises(EvopruneError, match="constraint"):
        p.variant(constraint="clip")
    with pytest.raises(EvopruneError, match="ratios"):
        p.variant(representation="masks", constraint="project")


def test_old_encoding_spelling_still_works_with_a_warning(problems):
    p = problems["ratios"]
    with pytest.warns(FutureWarning, match="representation"):
        old = NetworkPruningProblem(p.model, p.space, ([], p._ev), bn_batches=0, encoding="masks")
    assert old.representation == "masks" and old.encoding == "binary" and old.n_var == int(p.sizes.sum())
    with pytest.warns(FutureWarning):
        assert p.variant(encoding="masks").representation == "masks"


def test_bad_construction_is_one_line(problems):
    p = problems["ratios"]
    data = ([], p._ev)
    for kw, frag in ((dict(objectives="error"), "max_macs"), (dict(objectives="macs"), "objectives"),
                     (dict(representation="bits"), "representation"), (dict(min_ratio=1.5), "min_ratio"),
                     (dict(spread=2), "spread"), (dict(forward="fast"), "forward")):
        with pytest.raises(EvopruneError, match=frag):
            NetworkPruningProblem(p.model, p.space, data, bn_batches=0, **kw)


# ------------------------------------------------------------------------------------------------------------ CLI
def _invoke(*args):
    return CliRunner().invoke(main, ["--quiet", *map(str, args)])


def _net(ckpt):
    return ["--problem", "network", "--checkpoint", ckpt, "--data", "mini-cifar10", "--device", "cpu",
            "--param", "bn_batches=1", "--param", "eval_batches=1", "--param", "batch_size=64", "--param", "threads=1"]


def test_cli_search_nsga2_and_compare(tiny_checkpoint, tmp_path):
    out = tmp_path / "search"
    r = _invoke("search", *_net(tiny_checkpoint), "--strategy", "nsga2", "--pop-size", 4, "--budget", 8,
                "--out", out)
    assert r.exit_code == 0, r.output
    res = json.loads((out / "result.json").read_text())
    assert res["evaluations"] == 8 and res["objectives"] == ["error", "macs"] and len(res["front_fitness"]) >= 1
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["problem_info"]["hv_ref"] == [1.0, 1.0] and cfg["problem_info"]["encoding"] == "real"
    cmp_out = tmp_path / "compare"
    r = _invoke("compare", *_net(tiny_checkpoint), "--strategies", "nsga2,mo-cmaes,random", "--pop-size", 4,
                "--budget", 8, "--seeds", 2, "--out", cmp_out)
    assert r.exit_code == 0, r.output
    summary = json.loads((cmp_out / "summary.json").read_text())
    assert set(summary["strategies"]) == {"nsga2", "mo-cmaes", "random"}


def _assert_user_error(r, *fragments):
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in r.output, r.output
    for frag in fragments:
        assert frag in lines[0], lines[0]


def test_cli_bad_input(tiny_checkpoint, tmp_path):
    _assert_user_error(_invoke("search", "--problem", "network", "--data", "mini-cifar10", "--strategy", "nsga2",
                               "--budget", 8, "--out", tmp_path / "a"), "--checkpoint")
    _assert_user_error(_invoke("search", *_net(tiny_checkpoint), "--param", "objectives=error",
                               "--param", "max_macs=0.3", "--strategy", "nsga2", "--budget", 8,
                               "--out", tmp_path / "b"), "nsga2", "one objective")
    _assert_user_error(_invoke("search", *_net(tiny_checkpoint), "--param", "encodin=masks", "--budget", 8,
                               "--out", tmp_path / "c"), "encodin")
    assert not (tmp_path / "b").exists()
