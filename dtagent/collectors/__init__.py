"""Collectors: one module per area, each a pure function of a host snapshot.

Modules in this package are discovered at start-up; a :class:`Collector` subclass
with a ``name`` in any of them is available to the config by that name.
"""

from __future__ import annotations

import importlib
import pkgutil

from dtagent.collectors.base import Collector


def _subclasses(cls: type[Collector]) -> list[type[Collector]]:
    found: list[type[Collector]] = []
    for sub in cls.__subclasses__():
        if "name" in sub.__dict__:
            found.append(sub)
        found.extend(_subclasses(sub))
    return found


def available() -> dict[str, type[Collector]]:
    """Every collector class by name, importing each module of this package once."""
    for mod in pkgutil.iter_modules(__path__):
        if mod.name != "base":
            importlib.import_module(f"{__name__}.{mod.name}")
    # Only this package's collectors: subclasses defined elsewhere (tests) are not shipped.
    classes = {
        c.name: c
        for c in _subclasses(Collector)  # type: ignore[type-abstract]
        if c.__module__.startswith(__name__ + ".")
    }
    return dict(sorted(classes.items()))
