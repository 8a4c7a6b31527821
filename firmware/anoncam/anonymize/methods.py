"""The methods' functions by name, loaded from the registry (anoncam/registry.py) on first use."""
from __future__ import annotations

from collections.abc import Callable, Iterator, MutableMapping

from .. import registry


class _Functions(MutableMapping):
    """name -> function for every registered method; a name may be overridden (bench's timing)."""

    def __init__(self):
        self._fns: dict[str, Callable] = {}

    def __getitem__(self, name: str) -> Callable:
        if name not in self._fns:
            if name not in registry.SPECS:
                raise KeyError(name)
            self._fns[name] = registry.load(name)
        return self._fns[name]

    def __contains__(self, name: object) -> bool:  # without importing the method
        return name in registry.SPECS or name in self._fns

    def __setitem__(self, name: str, fn: Callable) -> None:
        self._fns[name] = fn

    def __delitem__(self, name: str) -> None:
        del self._fns[name]

    def __iter__(self) -> Iterator[str]:
        return iter(dict.fromkeys([*registry.SPECS, *self._fns]))

    def __len__(self) -> int:
        return len(set(registry.SPECS) | set(self._fns))


METHODS = _Functions()
