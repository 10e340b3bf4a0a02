"""Model checkpoints: a state dict plus metadata, loadable with ``torch.load(weights_only=True)``.

Layout (a plain dict of tensors and Python values, nothing else is pickled)::

    {"format": "evoprune-checkpoint", "version": 1,
     "state_dict": {...},
     "meta": {"arch", "model_kwargs", "dataset", "classes", "mean", "std", "in_channels", "image_size",
              "accuracy", "evoprune_version", "torch_version", "pruned": {unit: [kept indices]} or None}}

A pruned model is rebuilt from the zoo definition, then shrunk by the recorded per-unit kept channels (the indices
only fix shapes: the weights come from the state dict), so no module objects are unpickled.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import torch
from torch import nn

from evoprune.errors import EvopruneError
from evoprune.io import load_torch, save_torch, to_jsonable

FORMAT = "evoprune-checkpoint"


def save_checkpoint(path: str, model: nn.Module, meta: Dict[str, Any], extra: Optional[Dict[str, Any]] = None) -> None:
    """Save ``model``'s weights and ``meta`` atomically. ``meta['arch']`` must name a zoo model or factory spec."""
    from evoprune import __version__

    if "arch" not in meta:
        raise ValueError("checkpoint meta needs 'arch'")
    meta = dict(meta)
    meta.setdefault("model_kwargs", {})
    meta.setdefault("pruned", None)
    meta["evoprune_version"] = __version__
    meta["torch_version"] = str(torch.__version__)
    meta = to_jsonable(meta)  # plain Python values only: loadable with weights_only=True
    obj = {"format": FORMAT, "version": 1, "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
           "meta": meta}
    if extra:
        obj.update(extra)
    save_torch(path, obj)


def read_checkpoint(path: str) -> Dict[str, Any]:
    """Load and validate a checkpoint file (safe load); returns the raw dict."""
    obj = load_torch(path, "checkpoint")
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        if not isinstance(obj.get("state_dict"), dict) or not isinstance(obj.get("meta"), dict):
            raise EvopruneError(f"checkpoint '{path}' is damaged: missing state_dict or meta")
        return obj
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return {"format": "state_dict", "state_dict": obj, "meta": {}}
    raise EvopruneError(
        f"checkpoint '{path}' is not an evoprune checkpoint or a plain state dict; train one with 'evoprune train'"
    )


def build_from_meta(meta: Dict[str, Any]) -> nn.Module:
    """Rebuild the (possibly pruned) architecture described by checkpoint metadata, with fresh weights."""
    from . import create_model

    kwargs = dict(meta.get("model_kwargs") or {})
    model = create_model(meta["arch"], **kwargs)
    pruned = meta.get("pruned")
    if pruned:
        from evoprune.pruning.apply import shrink_to

        model = shrink_to(model, pruned, image_size=meta.get("image_size") or 32,
                          in_channels=kwargs.get("in_channels", 3))
    return model


def load_state_strict(model: nn.Module, state_dict: Dict[str, torch.Tensor], source: str) -> None:
    """``load_state_dict`` with a one-line error naming the first mismatch instead of a long traceback."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    if missing or unexpected:
        what = f"missing '{missing[0]}'" if missing else f"unexpected '{unexpected[0]}'"
        raise EvopruneError(
            f"checkpoint '{source}' does not fit this architecture ({what}, {len(missing)} missing, "
            f"{len(unexpected)} unexpected keys); pass the --model it was trained with"
        )
    for k, v in state_dict.items():
        if own[k].shape != v.shape:
            raise EvopruneError(
                f"checkpoint '{source}' does not fit this architecture: '{k}' has shape {tuple(v.shape)}, "
                f"model expects {tuple(own[k].shape)}; pass the --model/--width it was trained with"
            )
    if getattr(state_dict, "_metadata", None) is None and getattr(own, "_metadata", None) is not None:
        # our files keep tensors only; modules that read their format version on load (torchvision's MNASNet)
        # get the version of the architecture just built
        import collections

        state_dict = collections.OrderedDict(state_dict)
        state_dict._metadata = own._metadata  # type: ignore[attr-defined]
    model.load_state_dict(state_dict)


def load_model(path: str, arch: Optional[str] = None, model_kwargs: Optional[Dict[str, Any]] = None
               ) -> Tuple[nn.Module, Dict[str, Any]]:
    """Load a model from a checkpoint. ``arch`` overrides/supplies the architecture for plain state dicts."""
    ck = read_checkpoint(path)
    meta = dict(ck["meta"])
    if arch is not None and meta.get("arch") and meta["arch"] != arch:
        raise EvopruneError(
            f"checkpoint '{path}' holds a '{meta['arch']}' model, not '{arch}'; drop --model or pass --model {meta['arch']}"
        )
    if not meta.get("arch"):
        if arch is None:
            raise EvopruneError(f"checkpoint '{path}' is a plain state dict; pass --model to say its architecture")
        meta["arch"] = arch
        meta["model_kwargs"] = dict(model_kwargs or {})
        from . import classifier_outputs

        n = classifier_outputs(ck["state_dict"])  # a plain file keeps its own head (e.g. 1000 ImageNet classes)
        if n is not None:
            meta["model_kwargs"]["num_classes"] = n
    model = build_from_meta(meta)
    load_state_strict(model, ck["state_dict"], path)
    return model, meta
