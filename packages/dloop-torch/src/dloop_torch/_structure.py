"""Batches as nested structures: replace every tensor inside one, keep everything else."""

from __future__ import annotations

import copy
import dataclasses
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
    types, and every other value (numbers, strings, arrays, ...) is kept as it is.
    """
    result: T = _map(batch, function)
    return result


def _map(value: Any, function: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    if isinstance(value, torch.Tensor):
        return function(value)
    if isinstance(value, tuple):
        items = [_map(item, function) for item in value]
        if hasattr(value, "_fields"):  # a namedtuple
            return type(value)(*items)
        return tuple(items) if type(value) is tuple else _rebuild(value, items, tuple)
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
    attributes). Another mapping may share its storage with a shallow copy, so its
    container is copied deeply, but not its values, which are replaced at once. When
    that copy fails, the result is a plain dict.
    """
    clone: MutableMapping[Any, Any]
    if isinstance(value, (dict, UserDict)):
        clone = copy.copy(value)
    else:
        memo: dict[int, Any] = {id(item): item for item in value.values()}
        try:
            clone = copy.deepcopy(value, memo)
        except Exception:  # an object copy cannot handle: a plain dict loses nothing
            return mapped
    clone.update(mapped)
    return clone


def _rebuild(value: Any, items: list[Any], fallback: type[Any]) -> Any:
    """A sequence subclass rebuilt from ``items``, or the plain type if it cannot be."""
    try:
        return type(value)(items)
    except TypeError:
        return fallback(items)
