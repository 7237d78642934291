"""State dicts of other libraries as JSON built-in values, and back.

A torchdata ``StatefulDataLoader`` state holds tensors (generator states), tuples and
dicts with int keys; the loop's state dict must survive ``json.dumps``/``json.loads``.
Those values are written as one-key tagged dicts; everything JSON has stays as it is.
"""

from __future__ import annotations

import base64
import math
import zlib
from typing import Any

import torch

_TUPLE = "__dloop_tuple__"
_DICT = "__dloop_dict__"
_TENSOR = "__dloop_tensor__"
_BYTES = "__dloop_bytes__"
_FLOAT = "__dloop_float__"
_TAGS = (_TUPLE, _DICT, _TENSOR, _BYTES, _FLOAT)


def to_json(value: Any, path: str = "state") -> Any:
    """``value`` as JSON built-in values (see ``from_json``).

    Raises:
        TypeError: A value of another type, named with its path in ``value``.
    """
    if value is None or isinstance(value, (bool, int, str)):
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
        f"{path} is a {type(value).__name__} ({value!r}), which dloop_torch cannot put in a "
        "JSON state dict: state dicts may hold None, bool, int, float, str, bytes, lists, "
        "tuples, dicts and tensors"
    )


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
    return {key: from_json(item) for key, item in value.items()}
