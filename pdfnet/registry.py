"""Registries: the named choices a researcher extends (backbones, fusion blocks, loss terms, model implementations).

A registry maps a name to what implements it. Entries register themselves where they are defined::

    @FUSIONS.register("concat")
    class ConcatFusion(nn.Module): ...

and the config takes the registry's names as the allowed values of its key (``model.fusion: concat``). Adding an entry
is one file: a registry imports every module of the packages that hold its built-in entries the first time its names
are needed, so a new file in ``pdfnet/models/`` (or ``pdfnet/losses/``) is found without being listed anywhere. An
entry defined outside the package registers when its module is imported. This module imports nothing heavy, so the
config (which uses it) loads without torch; only asking a registry for its names imports the implementations.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterator
from typing import Any


class Registry:
    """Names -> implementations for the config key ``key``. ``packages``: where the built-in entries live.

    ``register_family(prefix, factory)`` adds an open family of names: ``prefix + anything`` resolves to
    ``factory(anything)`` (e.g. ``timm/<any timm model>``).
    """

    def __init__(self, key: str, packages: tuple[str, ...]) -> None:
        self.key = key
        self.packages = packages
        self._entries: dict[str, Any] = {}
        self._families: dict[str, Callable[[str], Any]] = {}
        self._loaded = False

    def register(self, name: str, obj: Any = None):
        """Register ``obj`` under ``name``; without ``obj``, a decorator."""
        def add(target: Any) -> Any:
            if name in self._entries and self._entries[name] is not target:
                raise ValueError(f"{self.key}: {name!r} is registered twice ({self._entries[name]!r}, {target!r})")
            self._entries[name] = target
            return target

        return add if obj is None else add(obj)

    def register_family(self, prefix: str, factory: Callable[[str], Any]) -> None:
        self._families[prefix] = factory

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True  # set first: the modules imported below register into this registry
        for package in self.packages:
            module = importlib.import_module(package)
            for info in pkgutil.iter_modules(getattr(module, "__path__", [])):
                importlib.import_module(f"{package}.{info.name}")

    def names(self) -> tuple[str, ...]:
        """Registered names, then each family as ``prefix<name>``."""
        self._load()
        return tuple(self._entries) + tuple(f"{prefix}<name>" for prefix in self._families)

    def __contains__(self, name: object) -> bool:
        self._load()
        if not isinstance(name, str):
            return False
        return name in self._entries or any(name.startswith(p) and len(name) > len(p) for p in self._families)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def get(self, name: str) -> Any:
        """The implementation of ``name``; KeyError naming the allowed values otherwise."""
        self._load()
        if name in self._entries:
            return self._entries[name]
        for prefix, factory in self._families.items():
            if name.startswith(prefix) and len(name) > len(prefix):
                return factory(name[len(prefix):])
        raise KeyError(f"{self.key}: unknown {name!r}; allowed: {', '.join(self.names())}")


# The registries researchers add to. Their entries: pdfnet/models/*.py (backbones, fusion blocks), pdfnet/losses/*.py
# (loss terms), pdfnet/build.py and pdfnet/lean/ (model implementations).
BACKBONES = Registry("model.backbone", ("pdfnet.models",))
FUSIONS = Registry("model.fusion", ("pdfnet.models",))
LOSS_TERMS = Registry("loss.terms", ("pdfnet.losses",))
IMPLEMENTATIONS = Registry("model.impl", ("pdfnet.build", "pdfnet.lean"))
