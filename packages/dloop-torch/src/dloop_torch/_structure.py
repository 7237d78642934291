"""Batches as nested structures: replace every tensor inside one, keep everything else."""

from __future__ import annotations

import copy
import dataclasses
import weakref
from collections import UserDict
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any, TypeVar

import torch

T = TypeVar("T")

_MISSING = object()


def map_tensors(batch: T, function: Callable[[torch.Tensor], torch.Tensor]) -> T:
    """Return ``batch`` with every tensor replaced by ``function(tensor)``.

    Tensors are found inside tuples, lists, dicts (any mapping), namedtuples and
    dataclass instances, nested to any depth; the containers are rebuilt with their own
    types (never silently turned into a plain tuple, list or dict: a type that cannot be
    rebuilt is a ``TypeError`` naming it), and every other value (numbers, strings,
    arrays, ...) is kept as it is.
    """
    result: T = _map(batch, function)
    return result


def _map(value: Any, function: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    if isinstance(value, torch.Tensor):
        return function(value)
    if isinstance(value, tuple):
        items = [_map(item, function) for item in value]
        if type(value) is tuple:
            return tuple(items)
        # A namedtuple's constructor takes its fields one by one.
        return _rebuild(value, items, tuple, spread=hasattr(value, "_fields"))
    if isinstance(value, list):
        items = [_map(item, function) for item in value]
        return items if type(value) is list else _rebuild(value, items, list)
    if isinstance(value, Mapping):
        mapped = {key: _map(item, function) for key, item in value.items()}
        if type(value) is dict or not isinstance(value, MutableMapping):
            return mapped
        return _rebuild_mapping(value, mapped)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        # A copy with fields set in place: no __init__ or __post_init__ runs again, and
        # frozen dataclasses work too.
        instance = copy.copy(value)
        for field in dataclasses.fields(value):
            item = getattr(value, field.name, _MISSING)
            if item is not _MISSING:
                object.__setattr__(instance, field.name, _map(item, function))
        return instance
    return value


def _rebuild_mapping(value: MutableMapping[Any, Any], mapped: dict[Any, Any]) -> Any:
    """A new mapping of ``value``'s type holding ``mapped``; ``value`` is left as it is.

    A dict subclass or a ``UserDict`` is copied shallowly (its copy has storage of its
    own, and keeps an OrderedDict's order, a defaultdict's factory, a subclass's
    attributes). Another mapping may share its storage with a shallow copy (a mapping
    over a dict it was given): whether its type does is found once, on a copy of the
    first batch of that type. A type that does not is copied shallowly too; one that
    does is copied deeply, but not its values, which are replaced at once.

    Raises:
        TypeError: The mapping can be neither copied so (``copy`` fails on it) nor made
            empty (``type(value)()``) and filled: its type is named, never changed.
    """
    clone: MutableMapping[Any, Any] | None = None
    if isinstance(value, (dict, UserDict)) or _shares_storage(value) is False:
        clone = _copied(value, deep=False)
    if clone is None:
        clone = _copied(value, deep=True)
    if clone is None:
        try:
            clone = type(value)()
        except Exception:
            clone = None
    if clone is None:
        kind = type(value)
        raise TypeError(
            f"a batch holds a mapping of type {kind.__module__}.{kind.__qualname__} that "
            "dloop_torch cannot rebuild with its tensors moved: copy.copy and copy.deepcopy "
            f"fail on it and {kind.__qualname__}() cannot make an empty one. Give it "
            "__copy__ (a copy with storage of its own), or a constructor that takes no "
            "arguments, or yield a dict"
        )
    clone.update(mapped)
    return clone


_SHARING: weakref.WeakKeyDictionary[type[Any], bool] = weakref.WeakKeyDictionary()
"""Per mapping type: whether its shallow copy shares its storage, once known."""


def _shares_storage(value: MutableMapping[Any, Any]) -> bool | None:
    """Whether a shallow copy of a mapping of ``value``'s type writes into the storage
    of the mapping it was copied from: tried once per type, on a deep copy of ``value``
    (never on ``value`` itself). None when that cannot be told (an empty mapping, a
    copy that fails)."""
    kind = type(value)
    if kind in _SHARING:
        return _SHARING[kind]
    probe = _copied(value, deep=True)
    shared: bool | None = None
    if probe is not None and len(probe):
        copied = _copied(probe, deep=False)
        if copied is not None:
            key = next(iter(probe))
            marker = object()
            try:
                copied[key] = marker
                shared = probe[key] is marker
            except Exception:
                shared = None
    if shared is not None:
        _SHARING[kind] = shared
    return shared


def _copied(value: MutableMapping[Any, Any], *, deep: bool) -> MutableMapping[Any, Any] | None:
    """A shallow copy of ``value``, or a deep one that shares its values (only its
    container is copied); None when ``copy`` fails on it."""
    try:
        if not deep:
            return copy.copy(value)
        memo: dict[int, Any] = {id(item): item for item in value.values()}
        return copy.deepcopy(value, memo)
    except Exception:  # a type copy cannot handle
        return None


def _rebuild(value: Any, items: list[Any], base: type[Any], *, spread: bool = False) -> Any:
    """A tuple or list subclass (``base``) of ``value``'s type holding ``items``, made by
    its constructor when that takes them (``type(value)(items)``, or one argument per
    item with ``spread``: a namedtuple). Otherwise a copy of ``value`` with its items
    replaced and its attributes kept, its constructor not run again (as for a
    dataclass); a tuple whose items are all unchanged (nothing to move) is kept as it is.

    Raises:
        TypeError: Neither the constructor nor a copy can make one (a type written in C
            with a constructor of its own, a list whose copy fails): the type is named,
            never changed into the plain ``base``.
    """
    kind = type(value)
    try:
        return kind(*items) if spread else kind(items)
    except Exception:  # a constructor that takes other arguments
        pass
    if base is tuple and all(new is old for new, old in zip(items, value, strict=True)):
        return value
    try:
        if base is tuple:
            rebuilt = tuple.__new__(kind, items)
            if getattr(value, "__dict__", None):
                rebuilt.__dict__.update(value.__dict__)
        else:
            rebuilt = copy.copy(value)  # attributes and slots too, storage of its own
            if rebuilt is value:
                raise TypeError(f"copy.copy gave the {kind.__qualname__} itself")
            list.__setitem__(rebuilt, slice(None), items)
    except Exception as error:
        name = f"{kind.__module__}.{kind.__qualname__}"
        raise TypeError(
            f"a batch holds a {base.__name__} of type {name} that dloop_torch cannot "
            f"rebuild with its tensors moved: {kind.__qualname__}(items) fails, and so "
            f"does a copy with its items replaced ({error}). Give it a constructor that "
            f"takes its items, or yield a plain {base.__name__}"
        ) from error
    return rebuilt
