"""The catalogue of methods: the built-in ones (``baselines``, ``mimo``) and the user's plug-ins,
loaded on first use, as timm's ``models/__init__`` imports its model modules.

``get_method(name)`` and ``method_names()`` load the catalogue; ``build_method`` turns a resolved
run config into the method object (the one place a method's :class:`Task` is made from a config).
"""

from __future__ import annotations

from typing import Any, Sequence

from ..methods.base import METHODS, Method, Task
from .plugins import import_plugin, load_plugins


def load_methods(extra_plugins: Sequence[str] = (), source: str = "the caller") -> None:
    """Import the modules that register methods (idempotent): the built-in ``baselines`` and
    ``mimo``, then the plug-ins (``PLURES_PLUGINS``, the ``plures.methods`` entry points, and the
    modules ``extra_plugins``, named by ``source``); see :mod:`benchmark.catalogue.plugins`."""
    import baselines  # noqa: F401  (registers on import)
    import mimo  # noqa: F401

    load_plugins()
    for module in extra_plugins:
        import_plugin(module, source)


def get_method(name: str) -> type[Method]:
    """The method class registered as ``name``; an unknown name raises listing the valid ones."""
    load_methods()
    return METHODS.get(name)


def method_names() -> list[str]:
    """The registered method names, built-in and plug-in, sorted."""
    load_methods()
    return METHODS.names()


def build_method(resolved: dict[str, Any], num_classes: int, image_size: int, in_channels: int = 3) -> Method:
    """The method of a resolved run config for a task of ``num_classes`` classes and images of
    ``image_size`` pixels (options checked by the method's ``Options``)."""
    r = resolved["run"]
    task = Task(num_classes=num_classes, backbone=r["backbone"], backbone_options=dict(resolved["backbone"]), in_channels=in_channels,
                image_size=image_size, dataset=r["dataset"])
    return get_method(r["method"]).from_config(dict(resolved["method"]), task)
