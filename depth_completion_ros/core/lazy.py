"""`lazy_module`: a module imported on first attribute access (so the weight-free path never imports torch).

Importing torch costs ~1.5 s and ~300 MB; the weight-free default needs only numpy, OpenCV and numba.  Core
modules that use torch in some functions only bind it lazily::

    torch = lazy_module("torch", globals())

The first attribute access (``torch.zeros``) imports the real module and rebinds the global name to it, so later
accesses cost nothing extra.  `isinstance` checks and annotations must not use the proxy itself (use
``torch.Tensor`` inside functions; annotations are strings under ``from __future__ import annotations``).
"""

from __future__ import annotations

import importlib
import threading
from types import ModuleType
from typing import Any

__all__ = ["lazy_module"]

_LOCK = threading.Lock()


class _LazyModule:
    """Stands for module `name` in `namespace` until first used."""

    __slots__ = ("_binding", "_name", "_namespace")

    def __init__(self, name: str, namespace: dict[str, Any], binding: str) -> None:
        self._name = name
        self._namespace = namespace
        self._binding = binding

    def _load(self) -> ModuleType:
        with _LOCK:  # one import, even when two threads use it first at once
            module = importlib.import_module(self._name)
            if self._namespace.get(self._binding) is self:
                self._namespace[self._binding] = module
        return module

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._load(), attr)

    def __repr__(self) -> str:
        return f"<lazy module {self._name!r}>"


def lazy_module(name: str, namespace: dict[str, Any], binding: str | None = None) -> Any:
    """The module `name` if already imported, else a proxy that imports it on first attribute access.

    Args:
        name: module to import ("torch").
        namespace: the caller's `globals()`; the proxy rebinds `binding` there to the real module once loaded.
        binding: the global name (default: the last component of `name`).
    """
    import sys

    if name in sys.modules:
        return sys.modules[name]
    return _LazyModule(name, namespace, binding or name.rsplit(".", 1)[-1])
