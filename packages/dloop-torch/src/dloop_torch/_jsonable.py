"""State dicts of other libraries as JSON built-in values, and back.

A torchdata ``StatefulDataLoader`` state holds tensors (generator states), tuples and
dicts with int keys, and a dataset's own state may hold numpy values (``np.int64``
counters, arrays, ``np.random.RandomState.get_state()``); the loop's state dict must
survive ``json.dumps``/``json.loads``. Those values are written as one-key tagged dicts,
exactly (dtype, shape and bytes); everything JSON has stays as it is. numpy is never
imported to write: a numpy value exists only where numpy is imported already.
"""

from __future__ import annotations

import base64
import math
import reprlib
import sys
import zlib
from typing import Any

import torch

_TUPLE = "__dloop_tuple__"
_DICT = "__dloop_dict__"
_TENSOR = "__dloop_tensor__"
_BYTES = "__dloop_bytes__"
_FLOAT = "__dloop_float__"
_NDARRAY = "__dloop_ndarray__"
_NUMPY_SCALAR = "__dloop_numpy_scalar__"
_TAGS = (_TUPLE, _DICT, _TENSOR, _BYTES, _FLOAT, _NDARRAY, _NUMPY_SCALAR)


def to_json(value: Any, path: str = "state") -> Any:
    """``value`` as JSON built-in values (see ``from_json``).

    Raises:
        TypeError: A value of another type, named with its path in ``value``.
    """
    kind = type(value)
    if value is None or kind is bool or kind is int or kind is str:
        return value
    numpy = sys.modules.get("numpy")
    if numpy is not None and isinstance(value, (numpy.ndarray, numpy.generic)):
        return _numpy_to_json(numpy, value, path)
    if isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {_FLOAT: repr(value)}
    if isinstance(value, list):
        return [to_json(item, f"{path}[{index}]") for index, item in enumerate(value)]
    if isinstance(value, tuple):
        return {_TUPLE: [to_json(item, f"{path}[{index}]") for index, item in enumerate(value)]}
    if isinstance(value, dict):
        if all(isinstance(key, str) for key in value) and not any(tag in value for tag in _TAGS):
            return {key: to_json(item, f"{path}[{key!r}]") for key, item in value.items()}
        return {
            _DICT: [
                [to_json(key, f"{path} key"), to_json(item, f"{path}[{key!r}]")]
                for key, item in value.items()
            ]
        }
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu().contiguous()
        raw = bytes(tensor.reshape(-1).view(torch.uint8).tolist())
        return {
            _TENSOR: {
                "dtype": str(tensor.dtype).removeprefix("torch."),
                "shape": list(tensor.shape),
                "data": base64.b64encode(zlib.compress(raw)).decode("ascii"),
            }
        }
    if isinstance(value, bytes):
        return {_BYTES: base64.b64encode(value).decode("ascii")}
    raise TypeError(
        f"{path} is a {type(value).__name__} ({reprlib.repr(value)}), which dloop_torch "
        "cannot put in a JSON state dict: state dicts may hold None, bool, int, float, str, "
        "bytes, lists, tuples, dicts, tensors, numpy arrays and numpy scalars"
    )


def _numpy_to_json(numpy: Any, value: Any, path: str) -> dict[str, Any]:
    """A numpy array or scalar as a tagged dict: its dtype (as numpy's ``.npy`` header
    writes it, so that structured dtypes survive), shape and raw bytes.

    Raises:
        TypeError: An array of Python objects, or a subclass of ndarray (a masked array,
            a matrix) whose extra meaning the bytes would not keep.
    """
    if value.dtype.hasobject or (
        isinstance(value, numpy.ndarray) and type(value) is not numpy.ndarray
    ):
        raise TypeError(
            f"{path} is a numpy {type(value).__name__} of dtype {value.dtype} "
            f"({reprlib.repr(value)}), which dloop_torch cannot put in a JSON state dict "
            "exactly: numpy arrays of numbers, strings and bytes (np.ndarray itself, not a "
            "subclass) and numpy scalars can be saved"
        )
    descr = to_json(numpy.lib.format.dtype_to_descr(value.dtype), f"{path}.dtype")
    if isinstance(value, numpy.generic):
        raw = value.tobytes()
        return {_NUMPY_SCALAR: {"dtype": descr, "data": base64.b64encode(raw).decode("ascii")}}
    raw = numpy.ascontiguousarray(value).tobytes()
    return {
        _NDARRAY: {
            "dtype": descr,
            "shape": list(value.shape),
            "data": base64.b64encode(zlib.compress(raw)).decode("ascii"),
        }
    }


def from_json(value: Any) -> Any:
    """The inverse of ``to_json``."""
    if isinstance(value, list):
        return [from_json(item) for item in value]
    if not isinstance(value, dict):
        return value
    if len(value) == 1:
        ((tag, content),) = value.items()
        if tag == _TUPLE:
            return tuple(from_json(item) for item in content)
        if tag == _DICT:
            return {from_json(key): from_json(item) for key, item in content}
        if tag == _TENSOR:
            raw = zlib.decompress(base64.b64decode(content["data"]))
            dtype = getattr(torch, content["dtype"])
            flat = torch.frombuffer(bytearray(raw), dtype=torch.uint8) if raw else torch.empty(0)
            return flat.to(torch.uint8).view(dtype).reshape(content["shape"]).clone()
        if tag == _BYTES:
            return base64.b64decode(content)
        if tag == _FLOAT:
            return float(content)
        if tag in (_NDARRAY, _NUMPY_SCALAR):
            return _numpy_from_json(tag, content)
    return {key: from_json(item) for key, item in value.items()}


def _numpy_from_json(tag: str, content: dict[str, Any]) -> Any:
    """The numpy array or scalar ``_numpy_to_json`` wrote (numpy imported now)."""
    import numpy  # only a state that holds numpy values needs it

    dtype = numpy.lib.format.descr_to_dtype(from_json(content["dtype"]))
    if tag == _NUMPY_SCALAR:
        return numpy.frombuffer(base64.b64decode(content["data"]), dtype=dtype)[0]
    raw = zlib.decompress(base64.b64decode(content["data"]))
    return numpy.frombuffer(raw, dtype=dtype).reshape(content["shape"]).copy()
