"""Versioned resource sets: content versions, what changed, and chains that end."""

from __future__ import annotations

from controlplane.cache import snapshot
from controlplane.cache.snapshot import EMPTY, Resource, ResourceSet


def res(name: str, value: int) -> Resource:
    return Resource.of(name, {"name": name, "value": value})


def test_a_version_is_the_contents_hash_whatever_the_key_order() -> None:
    assert Resource.of("a", {"x": 1, "y": 2}).version == Resource.of("a", {"y": 2, "x": 1}).version
    assert res("a", 1).version != res("a", 2).version


def test_a_set_built_from_the_same_resources_is_no_change_at_all() -> None:
    first = ResourceSet.build([res("a", 1), res("b", 1)])
    again = ResourceSet.build([res("a", 1), res("b", 1)], previous=first)
    assert again is first


def test_a_set_names_what_was_added_changed_and_removed_since_an_older_one() -> None:
    first = ResourceSet.build([res("a", 1), res("b", 1), res("c", 1)])
    second = ResourceSet.build([res("a", 2), res("b", 1), res("d", 1)], previous=first)
    third = second.update({"b": res("b", 5), "a": None})
    assert second.changed_since(first) == {"a", "c", "d"}
    assert third.changed_since(second) == {"a", "b"}
    assert third.changed_since(first) == {"a", "b", "c", "d"}
    assert third.changed_since(third) == frozenset()
    assert set(third.items) == {"b", "d"}


def test_an_unrelated_set_is_not_an_ancestor_so_versions_are_compared_instead() -> None:
    first = ResourceSet.build([res("a", 1)])
    other = ResourceSet.build([res("a", 1)])
    assert other.changed_since(first) is None
    assert snapshot.changed_between(first, other) == set()
    changed = other.update({"a": res("a", 2), "b": res("b", 1)})
    assert snapshot.changed_between(first, changed) == {"a", "b"}
    assert snapshot.changed_between(first, changed, ["b"]) == {"b"}
    assert snapshot.changed_between(None, changed) == {"a", "b"}


def test_chains_are_cut_so_old_sets_can_be_freed() -> None:
    current = EMPTY
    first = current = current.update({"a": res("a", 0)})
    for i in range(1, snapshot.MAX_DEPTH + 5):
        current = current.update({"a": res("a", i)})
    assert current.changed_since(first) is None  # too far back: compare versions instead
    assert current.depth <= snapshot.MAX_DEPTH


def test_a_sets_version_changes_with_any_member() -> None:
    one = ResourceSet.build([res("a", 1), res("b", 1)])
    two = one.update({"b": res("b", 2)})
    assert one.version != two.version
    assert two.update({"b": res("b", 1)}).version == one.version
