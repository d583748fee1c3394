"""Methods from outside the package: plug-in modules that register methods on import.

A plug-in is an ordinary module that subclasses :class:`~benchmark.methods.Method` and decorates it
with ``@register_method("name")``. It is loaded (after the built-in methods, by
:func:`benchmark.catalogue.methods.load_methods`) when

- its module is named in the environment variable ``PLURES_PLUGINS`` (comma-separated module
  names, importable from ``sys.path`` / ``PYTHONPATH``), or
- an installed distribution declares it in the entry-point group ``plures.methods``
  (``name = "module"`` or ``name = "module:object"``).

Loading is idempotent: a module is imported once, and the scan is repeated only when
``PLURES_PLUGINS`` or ``sys.path`` changed. The loader remembers which plug-in module registered
which method name (:func:`plugin_of`, :func:`loaded_plugins`). A plug-in that fails to import, or
that registers a name already taken (the registry's :class:`DuplicateNameError`), raises
:class:`PluginError` naming the module, where it came from, and the original error or the name and
its first owner.
"""

from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Callable

from ..core.registry import DuplicateNameError
from ..methods.base import METHODS

ENV_VAR = "PLURES_PLUGINS"
ENTRY_POINT_GROUP = "plures.methods"


class PluginError(ValueError):
    """A plug-in that cannot be loaded: it failed to import, or it registers a name already taken."""


@dataclass(frozen=True)
class Plugin:
    """A loaded plug-in module: where it came from and the method names it registered."""

    module: str
    source: str
    methods: tuple[str, ...]


_loaded: dict[str, Plugin] = {}  # plug-in module -> what it registered
_owner: dict[str, str] = {}  # method name -> the plug-in module that registered it
_scanned: tuple[str, tuple[str, ...]] | None = None  # (PLURES_PLUGINS, sys.path) of the last complete scan


def env_modules(environ: "dict[str, str] | os._Environ[str] | None" = None) -> list[str]:
    """The module names listed in ``PLURES_PLUGINS`` (comma-separated; blanks ignored)."""
    value = (os.environ if environ is None else environ).get(ENV_VAR, "")
    return [name.strip() for name in value.split(",") if name.strip()]


def load_plugins() -> list[Plugin]:
    """Import the plug-ins named by ``PLURES_PLUGINS``, then those of the ``plures.methods`` entry
    points; returns every plug-in loaded so far. Call it after the built-in methods are registered."""
    global _scanned
    key = (os.environ.get(ENV_VAR, ""), tuple(sys.path))
    if key == _scanned:
        return loaded_plugins()
    for module in env_modules():
        import_plugin(module, ENV_VAR)
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.module not in _loaded:
            import_plugin(ep.module, _entry_point_source(ep), load=ep.load)
    _scanned = key
    return loaded_plugins()


def import_plugin(module: str, source: str, load: Callable[[], Any] | None = None) -> Plugin:
    """Import one plug-in ``module`` (``source`` says where it was named; ``load`` replaces
    ``importlib.import_module(module)``, e.g. an entry point's ``load``); a no-op when loaded."""
    if module in _loaded:
        return _loaded[module]
    before = set(METHODS._items)
    try:
        (load or (lambda: importlib.import_module(module)))()
    except PluginError:
        _forget(set(METHODS._items) - before)
        raise
    except DuplicateNameError as exc:  # the registry's own error names neither the plug-in nor its source
        _forget(set(METHODS._items) - before)
        what = f"class {getattr(exc.new, '__qualname__', exc.new)!r}"
        first = _describe_owner(exc.name) if exc.kind == METHODS.kind and exc.name in METHODS else f"module {getattr(exc.existing, '__module__', '?')!r}"
        raise PluginError(f"plug-in module {module!r} (from {source}) registers {exc.kind} {exc.name!r} ({what}), but {first} "
                          f"registered {exc.name!r} first; choose another name") from exc
    except (Exception, SystemExit) as exc:  # any error of the user's module, sys.exit() included
        _forget(set(METHODS._items) - before)
        hint = ""
        if isinstance(exc, ModuleNotFoundError) and exc.name and _within(module, exc.name):  # the plug-in itself is missing
            hint = " (is the folder that holds it on sys.path, e.g. in PYTHONPATH?)"
        raise PluginError(f"plug-in module {module!r} (from {source}) failed to import: {type(exc).__name__}: {exc}{hint}") from exc
    # What it registered now, and what its module (or a submodule) registered before the loader
    # saw it (a module the user had imported already), in registration order.
    names = [n for n, cls in METHODS._items.items()
             if n not in before or (n not in _owner and _within(getattr(cls, "__module__", ""), module))]
    plugin = Plugin(module, source, tuple(names))
    _loaded[module] = plugin
    for name in plugin.methods:
        _owner[name] = module
    return plugin


def loaded_plugins() -> list[Plugin]:
    """The plug-ins loaded so far, in loading order."""
    return list(_loaded.values())


def plugin_of(name: str) -> Plugin | None:
    """The plug-in that registered method ``name``; ``None`` for a built-in method."""
    module = _owner.get(name)
    return _loaded[module] if module is not None else None


def unload(module: str) -> list[str]:
    """Forget plug-in ``module``: unregister its methods and drop it (and its submodules) from
    ``sys.modules``, so that a later load imports it afresh. Returns the names removed."""
    global _scanned
    plugin = _loaded.pop(module, None)
    names = list(plugin.methods) if plugin else []
    _forget(set(names))
    for loaded in [m for m in sys.modules if _within(m, module)]:
        del sys.modules[loaded]
    _scanned = None
    return names


def _within(name: str, module: str) -> bool:
    return name == module or name.startswith(module + ".")


def _forget(names: set[str]) -> None:
    for name in names:
        METHODS._items.pop(name, None)
        _owner.pop(name, None)


def _entry_point_source(ep: metadata.EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    where = f" of distribution {dist.name} {dist.version}" if dist is not None else ""
    return f"entry point {ep.name} = {ep.value!r} in group {ENTRY_POINT_GROUP!r}{where}"


def _describe_owner(name: str) -> str:
    """Who registered method ``name`` first: a plug-in module and its source, or a module."""
    module = _owner.get(name)
    if module is not None:
        return f"plug-in module {module!r} (from {_loaded[module].source})" if module in _loaded else f"plug-in module {module!r}"
    return f"module {getattr(METHODS._items[name], '__module__', '?')!r}"
