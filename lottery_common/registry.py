"""``Registry``: name -> object, the one extension point of every package.

Models, layer types, pruning criteria, IMP branches and learning-rate schedules are each a
``Registry``; adding one is a function plus ``@REGISTRY.register("name")``. Looking up an unknown
name raises a one-line ``ValueError`` that lists the known names.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """A named collection of ``T`` (``kind`` names what the entries are in error messages)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: ``@registry.register("name")`` adds the decorated object under ``name``."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"a {self.kind} name must be a non-empty string, got {name!r}")

        def add(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = obj
            return obj

        return add

    def add(self, name: str, obj: T) -> T:
        """``register(name)(obj)``."""
        return self.register(name)(obj)

    def check(self, name: object) -> str:
        """``name`` if registered, else a ``ValueError`` naming the known entries."""
        if not isinstance(name, str) or name not in self._entries:
            raise ValueError(f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}")
        return name

    def __getitem__(self, name: str) -> T:
        return self._entries[self.check(name)]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> tuple[str, ...]:
        """The registered names, in registration order."""
        return tuple(self._entries)

    def unregister(self, name: str) -> T:
        """Remove and return an entry (tests register temporary entries)."""
        return self._entries.pop(self.check(name))
