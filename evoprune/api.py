"""The Python API for users who do not want the CLI."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional, Tuple, Union

from torch import nn

from .config import PRUNE_DEFAULTS, PruneConfig
from .data import ImageData, Loaders, load_dataset, make_loaders
from .errors import EvopruneError


def prune(model: nn.Module, data: Union[str, ImageData, Loaders] = "mini-cifar10", *,
          target_macs: Optional[float] = PRUNE_DEFAULTS["target_macs"],
          target_params: Optional[float] = PRUNE_DEFAULTS["target_params"],
          selector: str = PRUNE_DEFAULTS["selector"], out: Optional[Union[str, Path]] = None,
          batch_size: int = PRUNE_DEFAULTS["batch_size"], seed: int = PRUNE_DEFAULTS["seed"],
          log: Optional[Callable[[str], None]] = None, **options: Any) -> Tuple[nn.Module, Any]:
    """Prune ``model`` with the paper's pipeline and return ``(pruned_model, report)``.

    ``target_macs`` / ``target_params``: fractions of the MACs / parameters to keep; give one or both (both: the
    binding one decides); neither (and no ``max_drop``/``ratios``): keep :data:`~evoprune.config.DEFAULT_TARGET_MACS`
    (0.33) of the MACs.
    ``data``: a dataset name (``"cifar10"`` needs ``data_dir=``), an :class:`ImageData` or ready :class:`Loaders`.
    ``selector``: how each unit's channels are chosen, as ``prune --selector``: ``"ga"`` (the paper's GA on the
    two-step fitness) or another single-objective strategy (``"cmaes"``, ``"random-search"``, ...), or a criterion
    ``"l1"``, ``"bn"``, ``"taylor"``, ``"random"``, ``"thinet"``, ``"module:function"`` (``strategy=`` is the
    deprecated spelling). Other keyword options are fields of
    :class:`evoprune.config.PruneConfig` (``finetune_epochs=``, ``pop_size=``, ``order=``, ...). The input model
    is not modified.

    Example::

        import evoprune
        from evoprune.models import create_model
        net = create_model("vgg16", width=0.25)           # or your trained network
        small, report = evoprune.prune(net, "mini-cifar10", target_macs=0.33, finetune_epochs=1)
        print(report.final)
    """
    from . import pipeline

    if "strategy" in options:
        import warnings

        warnings.warn("evoprune.prune(strategy=...) is now selector=...", DeprecationWarning, stacklevel=2)
        selector = options.pop("strategy")
    data_dir = options.pop("data_dir", None)
    if isinstance(data, Loaders):
        loaders = data
    else:
        d = load_dataset(data, data_dir) if isinstance(data, str) else data
        if not isinstance(d, ImageData):
            raise EvopruneError(f"data must be a dataset name, ImageData or Loaders, got {type(data).__name__}")
        device = next(model.parameters()).device
        loaders = make_loaders(d, batch_size=batch_size, seed=seed, device=device)
    fields = set(PRUNE_DEFAULTS)
    bad = [k for k in options if k not in fields]
    if bad:
        raise EvopruneError(f"unknown option '{bad[0]}' for evoprune.prune; allowed: {', '.join(sorted(fields))}")
    # no target of any kind: PruneConfig fills in the default one
    cfg = PruneConfig(target_macs=target_macs, target_params=target_params, selector=selector,
                      batch_size=batch_size, seed=seed, **options)
    run_dir = None
    if out is not None:
        from .io import prepare_run_dir

        run_dir = prepare_run_dir(out, overwrite=False)
    return pipeline.run(model, loaders, cfg, out=run_dir, log=log or (lambda s: None))
