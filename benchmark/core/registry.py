"""Name -> factory registries (the one kind of mutable global the project allows)."""

from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError, ValueError):
    """A name that is not registered; the message lists the valid choices."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0])


def unknown(kind: str, name: object, choices: "list[str] | tuple[str, ...]") -> UnknownNameError:
    """The error for a bad choice: names the value and lists the valid ones."""
    listed = ", ".join(sorted(map(str, choices))) or "(none registered)"
    return UnknownNameError(f"unknown {kind} {name!r}; valid choices: {listed}")


class DuplicateNameError(ValueError):
    """A name registered a second time; ``existing`` is what holds the name, ``new`` what asked for it."""

    def __init__(self, kind: str, name: str, new: object, existing: object) -> None:
        super().__init__(f"{kind} {name!r} is registered twice: by {_where(new)}, and first by {_where(existing)}")
        self.kind, self.name, self.new, self.existing = kind, name, new, existing


def _where(obj: object) -> str:
    """``module.qualname`` of a registered class or function; the module of anything else."""
    module = getattr(obj, "__module__", "?")
    qualname = getattr(obj, "__qualname__", None) if isinstance(obj, type) or callable(obj) else None
    return f"{module}.{qualname}" if qualname else f"module {module}"


class Registry(Generic[T]):
    """A decorator-based registry: ``@REG.register("name")`` then ``REG.get("name")``."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items:
                raise DuplicateNameError(self.kind, name, obj, self._items[name])
            self._items[name] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise unknown(self.kind, name, list(self._items)) from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def ordered(self) -> list[T]:
        """The registered items in registration order."""
        return list(self._items.values())

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


def import_package(package: str) -> None:
    """Import the package named ``package`` and every module of it (see :func:`import_submodules`).

    The registries' discovery of their built-in entries: a registry module names the package
    where entries live instead of importing it, as it names a user's plug-in modules, so the
    entries depend on the registry and never the other way round.
    """
    if package in _IMPORTED_PACKAGES:  # scanned once per process: callers ask on every lookup
        return
    import importlib

    module = importlib.import_module(package)
    import_submodules(package, list(module.__path__))
    _IMPORTED_PACKAGES.add(package)


_IMPORTED_PACKAGES: set[str] = set()  # part of the registries' bookkeeping


def import_submodules(package: str, path: list[str]) -> None:
    """Import every module of ``package`` whose name does not start with ``_`` (so that their
    registration decorators run): a package of plug-ins registers its members on import."""
    import importlib
    import pkgutil

    for info in sorted(pkgutil.iter_modules(path), key=lambda i: i.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"{package}.{info.name}")
