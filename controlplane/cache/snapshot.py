"""Versioned resources: every resource carries the hash of its content, every set remembers
what changed from the set it was made from.

A push should carry only what changed, and a stream should find it without comparing thousands
of resources: a :class:`ResourceSet` made from an earlier one records the names it touched, and
:meth:`ResourceSet.changed_since` walks that chain back to the set a stream last sent. Chains are
cut after :data:`MAX_DEPTH` links so old sets can be freed; a stream that far behind compares
versions name by name instead. A resource's version is its content hash, so an update that
changes nothing is no change at all, on every replica alike.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

MAX_DEPTH = 64
Json = dict[str, Any]


def content_version(body: Json) -> str:
    """A short hash of a resource's content (keys sorted, so equal content, equal version)."""
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


@dataclass(frozen=True)
class Resource:
    name: str
    body: Json
    version: str

    @classmethod
    def of(cls, name: str, body: Json) -> Resource:
        return cls(name, body, content_version(body))


@dataclass(frozen=True, eq=False)
class ResourceSet:
    """The resources of one type, by name; ``changed`` are the names added, changed or removed
    since ``parent``."""

    items: Mapping[str, Resource]
    version: str
    parent: ResourceSet | None = None
    changed: frozenset[str] = frozenset()
    depth: int = 0

    @classmethod
    def build(cls, resources: Iterable[Resource], *, previous: ResourceSet | None = None
              ) -> ResourceSet:
        """A set of exactly ``resources``, linked to ``previous`` when there is one."""
        items = {r.name: r for r in resources}
        if previous is None:
            return cls(items, _set_version(items))
        old = previous.items
        changed = {n for n, r in items.items() if n not in old or old[n].version != r.version}
        changed |= old.keys() - items.keys()
        if not changed:
            return previous
        return previous._child(items, frozenset(changed))

    def update(self, updates: Mapping[str, Resource | None]) -> ResourceSet:
        """This set with some resources replaced, added or (None) removed."""
        items = dict(self.items)
        changed = set()
        for name, resource in updates.items():
            if resource is None:
                if items.pop(name, None) is not None:
                    changed.add(name)
            elif name not in items or items[name].version != resource.version:
                items[name] = resource
                changed.add(name)
        if not changed:
            return self
        return self._child(items, frozenset(changed))

    def _child(self, items: dict[str, Resource], changed: frozenset[str]) -> ResourceSet:
        depth = self.depth + 1
        parent: ResourceSet | None = self if depth <= MAX_DEPTH else None
        return ResourceSet(items, _set_version(items), parent, changed, depth if parent else 0)

    def changed_since(self, older: ResourceSet | None) -> frozenset[str] | None:
        """The names that differ between ``older`` and this set, or None when ``older`` is not
        an ancestor any more (the caller then compares versions itself)."""
        if older is None:
            return None
        names: set[str] = set()
        node: ResourceSet | None = self
        while node is not None:
            if node is older:
                return frozenset(names)
            names |= node.changed
            node = node.parent
        return None


EMPTY = ResourceSet({}, "empty")


def _set_version(items: Mapping[str, Resource]) -> str:
    digest = hashlib.sha256()
    for name in sorted(items):
        digest.update(name.encode())
        digest.update(items[name].version.encode())
    return digest.hexdigest()[:16]


def changed_between(old: ResourceSet | None, new: ResourceSet,
                    names: Iterable[str] | None = None) -> set[str]:
    """Names whose version differs between two unrelated sets (added and removed ones
    included), looking only at ``names`` when given."""
    before = old.items if old is not None else {}
    wanted = new.items.keys() | before.keys() if names is None else set(names)
    return {n for n in wanted if _version(new.items, n) != _version(before, n)}


def _version(items: Mapping[str, Resource], name: str) -> str | None:
    found = items.get(name)
    return found.version if found is not None else None
