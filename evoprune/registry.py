"""One small generic registry for models, datasets, operators, problems, strategies, evaluators, selectors.

Every registry resolves three kinds of names:

* a registered short name (``"vgg16"``, ``"swap"``),
* ``"package.module:attr"`` -- imported with :mod:`importlib`,
* ``"path/to/file.py:attr"`` -- loaded from a file,

so users plug in their own objects from the CLI without editing evoprune.
"""
from __future__ import annotations

import difflib
import importlib
import importlib.util
import inspect
import os
import sys
from typing import Any, Callable, Dict, Iterable, List, Optional, TypeVar

from .errors import EvopruneError

T = TypeVar("T")


def load_object(spec: str, kind: str = "object") -> Any:
    """Import ``"pkg.module:attr"`` or ``"file.py:attr"`` and return the attribute."""
    if ":" not in spec:
        raise EvopruneError(f"{kind} '{spec}' is not of the form 'package.module:name' or 'file.py:name'")
    mod_name, _, attr = spec.rpartition(":")
    if not mod_name or not attr:
        raise EvopruneError(f"{kind} '{spec}' is not of the form 'package.module:name' or 'file.py:name'")
    if mod_name.endswith(".py") or os.sep in mod_name or "/" in mod_name:
        path = os.path.abspath(mod_name)
        if not os.path.isfile(path):
            raise EvopruneError(f"{kind} file '{mod_name}' does not exist; give an existing .py file as 'file.py:name'")
        unique = "evoprune_user_" + str(abs(hash(path)))
        module = sys.modules.get(unique)
        if module is None:
            mspec = importlib.util.spec_from_file_location(unique, path)
            if mspec is None or mspec.loader is None:
                raise EvopruneError(f"cannot load {kind} file '{mod_name}': not a Python source file")
            module = importlib.util.module_from_spec(mspec)
            sys.modules[unique] = module  # before exec: lets pickle find classes defined there
            try:
                mspec.loader.exec_module(module)
            except Exception as exc:  # user code: report, do not crash
                del sys.modules[unique]
                raise EvopruneError(f"{kind} file '{mod_name}' failed to import: {type(exc).__name__}: {exc}") from exc
    else:
        try:
            module = importlib.import_module(mod_name)
        except ModuleNotFoundError as exc:
            raise EvopruneError(f"{kind} module '{mod_name}' not found; check the name and that it is on PYTHONPATH") from exc
        except Exception as exc:
            raise EvopruneError(f"{kind} module '{mod_name}' failed to import: {type(exc).__name__}: {exc}") from exc
    try:
        return getattr(module, attr)
    except AttributeError:
        raise EvopruneError(f"{kind} '{attr}' not found in '{mod_name}'") from None


class Registry(Dict[str, Any]):
    """A named mapping ``name -> object`` with a decorator for registration."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.docs: Dict[str, str] = {}

    def register(self, name: Optional[str] = None, *, doc: Optional[str] = None) -> Callable[[T], T]:
        """Decorator: ``@REG.register()`` or ``@REG.register("name")``."""

        def deco(obj: T) -> T:
            key = name or getattr(obj, "__name__", None)
            if not key:
                raise ValueError("cannot infer a registry name; pass one")
            self[key] = obj
            text = doc or (getattr(obj, "__doc__", None) or "").strip().splitlines()
            self.docs[key] = text if isinstance(text, str) else (text[0] if text else "")
            return obj

        return deco

    def resolve(self, name: str) -> Any:
        """A short name or a ``module:name`` / ``file.py:name`` spec -> the object; unknown: a one-line error."""
        if not isinstance(name, str) or not name:
            raise EvopruneError(f"{self.kind} name must be a non-empty string, got {name!r}")
        if name in self:
            return self[name]
        if ":" in name and not self._is_prefixed(name):
            return load_object(name, self.kind)
        for prefix, obj in self.items():
            if prefix.endswith(":") and name.startswith(prefix):
                return obj
        hint = difflib.get_close_matches(name, list(self), n=1)
        extra = f" (did you mean '{hint[0]}'?)" if hint else ""
        raise EvopruneError(
            f"unknown {self.kind} '{name}'{extra}; known: {', '.join(self.names())} "
            f"or 'module:name' / 'file.py:name'"
        )

    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        """:meth:`resolve` (unlike ``dict.get`` it raises for an unknown name and ignores ``default``; kept because
        every caller before ``resolve`` existed spells it so)."""
        return self.resolve(name)

    def _is_prefixed(self, name: str) -> bool:
        return any(k.endswith(":") and name.startswith(k) for k in self)

    def names(self) -> List[str]:
        return sorted(self)

    def describe(self) -> Iterable[tuple]:
        return [(k, self.docs.get(k, "")) for k in self.names()]


MODELS = Registry("model")
DATASETS = Registry("dataset")
OPERATORS = Registry("operator")
PROBLEMS = Registry("problem")
STRATEGIES = Registry("strategy")
EVALUATORS = Registry("evaluator")
SELECTORS = Registry("selector")

ALL = {
    "models": MODELS,
    "datasets": DATASETS,
    "operators": OPERATORS,
    "problems": PROBLEMS,
    "strategies": STRATEGIES,
    "evaluators": EVALUATORS,
    "selectors": SELECTORS,
}


def accepted_kwargs(fn: Callable) -> Optional[set]:
    """Keyword names ``fn`` accepts, or ``None`` if it takes ``**kwargs`` (or its signature is unknown)."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    if any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
        return None
    return {n for n, p in sig.parameters.items() if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
