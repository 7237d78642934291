"""A warning for a shuffled DataLoader resumed inside an epoch without an adapter.

The core never imports torch: a DataLoader is recognised by its shape (``dataset``,
``sampler`` and ``batch_sampler`` attributes), a random sampler by a ``generator``
attribute (``RandomSampler``, ``SubsetRandomSampler``, ``WeightedRandomSampler`` and their
kin have one) or ``Random`` in its class name.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dloop._warnings import warn

_LOADER_ATTRIBUTES = ("dataset", "sampler", "batch_sampler")

_warned = False
"""Whether this process has warned already: the warning comes once."""


def random_sampler_of(data: object) -> object | None:
    """The random sampler of DataLoader-shaped ``data`` (its sampler, batch sampler or
    the batch sampler's sampler), or None."""
    if not all(hasattr(data, name) for name in _LOADER_ATTRIBUTES):
        return None
    batch_sampler = getattr(data, "batch_sampler", None)
    candidates: tuple[object, ...] = (
        getattr(data, "sampler", None),
        batch_sampler,
        getattr(batch_sampler, "sampler", None),
    )
    for sampler in candidates:
        if sampler is not None and (
            hasattr(sampler, "generator") or "Random" in type(sampler).__name__
        ):
            return sampler
    return None


def warn_if_order_differs(data: object, state: Mapping[str, Any]) -> None:
    """Warn, once per process, when a loop over a DataLoader with a random sampler and
    no data-state hooks (no ``dloop_torch.prepare``) resumes inside an epoch: that
    epoch's order is drawn anew, so the resumed run sees other batches."""
    global _warned
    if _warned or state["epoch_finished"] or state["epoch_step"] < 0:
        return
    if callable(getattr(data, "dloop_load_state_dict", None)):
        return  # an adapter restores what the order depends on
    sampler = random_sampler_of(data)
    if sampler is None:
        return
    _warned = True
    warn(
        f"the loop resumes inside epoch {state['epoch']} of data {data!r}, a DataLoader "
        f"whose sampler {sampler!r} draws a new random order for every pass: the resumed "
        "epoch will see other batches than the uninterrupted run (some samples twice, "
        "some not at all). Wrap the DataLoader with dloop_torch.prepare(loader), which "
        "saves that order's random state in the loop's state dict and replays it.",
    )
