"""evoprune: evolutionary channel pruning of convolutional networks.

    import evoprune
    small, report = evoprune.prune(model, "mini-cifar10", target_macs=0.33)
"""
__version__ = "0.1.0"

__all__ = ["prune", "create_model", "load_dataset", "EvopruneError", "__version__"]


def __getattr__(name):  # lazy: `import evoprune` stays cheap (no torch import) until the API is used
    if name == "prune":
        from .api import prune

        return prune
    if name == "create_model":
        from .models import create_model

        return create_model
    if name == "load_dataset":
        from .data import load_dataset

        return load_dataset
    if name == "EvopruneError":
        from .errors import EvopruneError

        return EvopruneError
    raise AttributeError(f"module 'evoprune' has no attribute {name!r}")
