"""Lazy package exports: ``from volseg.io import open_volume`` imports ``volseg.io.readers``
when the name is first used, not when ``volseg.io`` is imported.

A package's ``__init__`` imports what it exports under ``TYPE_CHECKING`` (for type
checkers and readers) and names where each export lives::

    if TYPE_CHECKING:
        from volseg.io.readers import VolumeMeta, open_volume

    lazy_exports(__name__, {"volseg.io.readers": ("VolumeMeta", "open_volume")})

so that importing the package, and any light module in it (an options module that the
command line needs for ``--help``), costs nothing until an export is used.  An export
with the name of one of the package's modules (``volseg.metrics.evaluate``, the module
and the function) stays the export, as after an eager ``from ... import``.
"""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


class _LazyPackage(types.ModuleType):
    """A package module whose exports are imported on first access."""

    _lazy_where: dict[str, str]

    def __getattr__(self, name: str) -> Any:
        module = self.__dict__.get("_lazy_where", {}).get(name)
        if module is None:
            raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        self.__dict__[name] = value  # the next look-up is an ordinary attribute
        return value

    def __setattr__(self, name: str, value: Any) -> None:
        # The import system sets each imported submodule on its package; where the
        # submodule's name is also an export, the export wins (as with eager imports).
        if (isinstance(value, types.ModuleType) and value.__name__ == f"{self.__name__}.{name}"
                and name in self.__dict__.get("_lazy_where", {})):
            return
        super().__setattr__(name, value)

    def __dir__(self) -> list[str]:
        return sorted(set(self.__dict__) | set(self.__dict__.get("_lazy_where", {})))


def lazy_exports(package: str, exports: Mapping[str, Iterable[str]]) -> None:
    """Make the exports of ``package`` (its ``__name__``) import on first access.

    Parameters
    ----------
    package
        The package's ``__name__`` (called from its ``__init__``).
    exports
        ``{module: (name, ...)}``: the names each module exports through the package.
    """
    module = sys.modules[package]
    module.__dict__["_lazy_where"] = {name: source for source, names in exports.items()
                                      for name in names}
    module.__class__ = _LazyPackage
