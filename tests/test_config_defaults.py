"""One source for every default: PruneConfig (evoprune.config) feeds the CLI, the API and the pipeline; one operator
table feeds the strategies and the problems."""
from __future__ import annotations

import inspect
from types import SimpleNamespace

import click
import pytest
from click.testing import CliRunner

from evoprune.config import DEFAULT_TARGET_MACS, OPERATOR_DEFAULTS, PRUNE_DEFAULTS, PruneConfig, operator_defaults
from evoprune.errors import EvopruneError


# ------------------------------------------------------------------------------------------------- the default target
def test_max_drop_alone_is_valid():
    cfg = PruneConfig(max_drop=0.02)
    cfg.validate()
    assert cfg.target_macs is None and cfg.target_params is None and cfg.max_drop == 0.02


def test_default_target_only_when_no_target_of_any_kind():
    assert PRUNE_DEFAULTS["target_macs"] is None and DEFAULT_TARGET_MACS == 0.33
    assert PruneConfig().target_macs == DEFAULT_TARGET_MACS
    assert PruneConfig(target_params=0.5).target_macs is None
    assert PruneConfig(ratios={"features.0": 0.5}).target_macs is None
    cfg = PruneConfig(target_macs=0.5)
    cfg.target_macs = None  # cleared by hand: validate applies the same rule
    cfg.validate()
    assert cfg.target_macs == DEFAULT_TARGET_MACS
    with pytest.raises(EvopruneError, match="one kind of target"):
        PruneConfig(target_macs=0.5, max_drop=0.1).validate()


def test_fingerprints_unchanged_by_the_move():
    # values of the configuration before it moved to evoprune.config: run directories made then still resume
    # (the GA's greedy seeding and the default refit came later and change what the default run does:
    # seeding="none", refit=False is the old one)
    assert PruneConfig(seeding="none", refit=False).fingerprint() == "c6f3f3e5b4f1ce9c"
    assert PruneConfig(max_drop=0.02, seeding="none", refit=False).fingerprint() == "710e6ecd4ffa74fb"
    assert PruneConfig(target_macs=0.5, selector="l1", refit=False).fingerprint() == "5d9952ed783b1899"  # no GA
    # an old default run is not resumed as seeded or refit
    assert PruneConfig().fingerprint() != "c6f3f3e5b4f1ce9c"
    assert PruneConfig(seeding="none").fingerprint() != "c6f3f3e5b4f1ce9c"


def test_pipeline_reexports_the_config():
    from evoprune import pipeline

    assert pipeline.PruneConfig is PruneConfig


# ---------------------------------------------------------------------------------------------------------- the CLI
def _cli_defaults(cmd: click.Command):
    """What the command receives when no option but the required --checkpoint is given."""
    ctx = cmd.make_context(cmd.name, ["--checkpoint", "model.pt"])
    return {k: tuple(v) if isinstance(v, list) else v for k, v in ctx.params.items()}


def test_prune_options_default_to_the_dataclass():
    from evoprune.commands.prune import prune

    cli = _cli_defaults(prune)
    shared = [k for k in PRUNE_DEFAULTS if k in cli]
    # every field is an option of prune but the sensitivity grid (the sensitivity command's --ratios)
    assert set(PRUNE_DEFAULTS) - set(shared) == {"sensitivity_ratios"}
    for k in shared:
        assert cli[k] == PRUNE_DEFAULTS[k], k


def test_sensitivity_options_default_to_the_dataclass():
    from evoprune.commands.prune import sensitivity

    cli = _cli_defaults(sensitivity)
    for k in ("sensitivity_method", "batch_size", "bn_batches", "eval_batches", "seed"):
        assert cli[k] == PRUNE_DEFAULTS[k], k
    assert tuple(float(x) for x in cli["grid"].split(",")) == PRUNE_DEFAULTS["sensitivity_ratios"]


@pytest.mark.parametrize("name", ["prune", "sensitivity"])
def test_parsed_defaults_build_the_default_config(name):
    from evoprune.commands import prune as mod
    from evoprune.prune_runs import config_from_options

    p = _cli_defaults(getattr(mod, name))
    p = p if name == "prune" else dict(p, ratios=None)
    assert config_from_options(p) == PruneConfig()


def test_config_from_max_drop_has_no_macs_target():
    from evoprune.commands import prune as mod
    from evoprune.prune_runs import config_from_options

    ctx = mod.prune.make_context("prune", ["--checkpoint", "model.pt", "--max-drop", "0.02", "--pop-size", "7"])
    cfg = config_from_options(ctx.params)
    cfg.validate()
    assert (cfg.target_macs, cfg.max_drop, cfg.pop_size) == (None, 0.02, 7)


def test_help_shows_the_dataclass_defaults():
    from evoprune.cli import main

    r = CliRunner().invoke(main, ["prune", "--help"])
    assert r.exit_code == 0, r.output
    text = " ".join(r.output.split())
    for flag in ("pop_size", "generations", "finetune_steps", "finetune_epochs", "finetune_lr", "calib_batches"):
        assert f"[default: {PRUNE_DEFAULTS[flag]}]" in text, flag
    assert f"(default {DEFAULT_TARGET_MACS} when no other target is given)" in text


# ---------------------------------------------------------------------------------------------------------- the API
def test_api_defaults_come_from_the_dataclass():
    from evoprune.api import prune

    sig = inspect.signature(prune).parameters
    assert sig["selector"].default == PRUNE_DEFAULTS["selector"]
    for k in ("target_macs", "target_params", "batch_size", "seed"):
        assert sig[k].default == PRUNE_DEFAULTS[k], k


# ------------------------------------------------------------------------------------------------ operator defaults
def test_one_operator_table():
    from evoprune.problems import ChannelSelectionProblem
    from evoprune.problems.channel_selection import FIXED_K_OPERATORS, FREE_K_OPERATORS
    from evoprune.strategies.ga import GA_DEFAULTS

    fixed, free = OPERATOR_DEFAULTS["fixed_k"], OPERATOR_DEFAULTS["free_k"]
    assert fixed == {"init": "random-k", "crossover": "cardinality", "mutation": "swap", "selection": "tournament"}
    assert free == {"init": "bernoulli", "crossover": "uniform", "mutation": "flip", "selection": "tournament"}
    assert {k: GA_DEFAULTS[k] for k in fixed} == fixed
    assert (FIXED_K_OPERATORS, FREE_K_OPERATORS) == (fixed, free)
    ev = lambda m: (~m).sum(1).astype(float)  # noqa: E731
    assert ChannelSelectionProblem(8, 3, ev).default_operators == fixed
    assert ChannelSelectionProblem(8, None, ev).default_operators == free
    copy = operator_defaults()
    copy["init"] = "importance"
    assert OPERATOR_DEFAULTS["fixed_k"]["init"] == "random-k"  # callers get copies


@pytest.mark.parametrize("k,fixed", [(3, True), (None, False)])
def test_nsga2_falls_back_to_the_table(k, fixed):
    from evoprune.strategies import nsga2

    problem = SimpleNamespace(name="bare", encoding="binary", k=k, n_var=8)  # no default_operators
    v = nsga2._Variation(problem, dict(nsga2.DEFAULTS))
    row = operator_defaults(fixed)
    assert (v.cx_name, v.mut_name) == (row["crossover"], row["mutation"])


def test_make_toolbox_falls_back_to_the_fixed_k_row(monkeypatch):
    import numpy as np

    import evoprune.operators as ops
    from evoprune.problems.base import make_toolbox

    asked = {}
    real = ops.get_operator

    def spy(kind, name):
        asked[kind] = name
        return real(kind, name)

    monkeypatch.setattr(ops, "get_operator", spy)
    problem = SimpleNamespace(name="bare", encoding="binary", n_var=8, k=3, weights=(-1.0,),
                              repair=lambda g, rng: g, evaluate=lambda g: np.zeros((len(g), 1)))
    make_toolbox(problem, seed=0)
    assert asked == OPERATOR_DEFAULTS["fixed_k"]


def test_differences_name_the_fields_and_count_later_fields_at_their_old_value():
    from dataclasses import asdict

    old = asdict(PruneConfig(seeding="none", refit=False))
    for k in ("refit", "seeding"):  # a run from before these options existed has no such keys
        old.pop(k)
    assert PruneConfig(seeding="none", refit=False).differences(old) == ""
    assert PruneConfig(seeding="none").differences(old) == "refit: False -> None"
    assert PruneConfig(seeding="none", refit=False, pop_size=7).differences(old) == "pop_size: 50 -> 7"


def test_resume_of_a_run_from_before_the_refit_default_names_the_fix(tmp_path):
    import json
    from dataclasses import asdict

    from evoprune.prune_runs import prepare_prune_dir

    out = tmp_path / "old"
    out.mkdir()
    stored = {"config": asdict(PruneConfig(refit=False)), "fingerprint": PruneConfig(refit=False).fingerprint()}
    (out / "prune_config.json").write_text(json.dumps(stored, default=str))
    before = (out / "prune_config.json").read_bytes()
    with pytest.raises(EvopruneError, match=r"\(refit: False -> None\); use the same options \(a run from before "
                                            r"the refit became the default: add --no-refit\)"):
        prepare_prune_dir({"out": str(out), "overwrite": False, "resume": True}, PruneConfig(), "cpu", "runs/x")
    assert (out / "prune_config.json").read_bytes() == before
