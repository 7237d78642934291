"""A warning for a shuffled DataLoader resumed without an adapter, when the resumed order
will differ from the uninterrupted one.

The core never imports torch: a DataLoader is recognised by its shape (``dataset``,
``sampler`` and ``batch_sampler`` attributes), a random sampler by a ``generator``
attribute (``RandomSampler``, ``SubsetRandomSampler``, ``WeightedRandomSampler`` and their
kin have one) or ``Random`` in its class name, and a seeded one by that ``generator`` not
being None.

Without ``dloop_torch.prepare``, nothing records what an epoch's order was drawn from:

- inside an epoch, the loop re-iterates the DataLoader, which draws the epoch's order
  again: from torch's global generator as the user restored it (later than where the
  epoch drew it), or from the sampler's own generator as this process seeded it. Only the
  latter, in epoch 0, gives the same order;
- at an epoch's end, the next epoch draws its order as in the uninterrupted run when it
  comes from the global generator (which the user restores), but not from the sampler's
  own generator, which in this process starts again from its seed.
"""

from __future__ import annotations

import reprlib
from collections.abc import Mapping
from typing import Any

from dloop._warnings import warn

_LOADER_ATTRIBUTES = ("dataset", "sampler", "batch_sampler")

_warned = False
"""Whether this process has warned already: the warning comes once."""

_short = reprlib.Repr()
_short.maxother = 80
_short.maxstring = 80


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
    no data-state hooks (no ``dloop_torch.prepare``) resumes where the order it will see
    is not the uninterrupted run's: inside an epoch (except epoch 0 of a sampler with its
    own generator, which this process seeds as the first run did), or at an epoch's end
    before an epoch drawn from the sampler's own generator."""
    global _warned
    if _warned or state["epoch_step"] < 0:
        return
    if callable(getattr(data, "dloop_load_state_dict", None)):
        return  # an adapter restores what the order depends on
    sampler = random_sampler_of(data)
    if sampler is None:
        return
    seeded = getattr(sampler, "generator", None) is not None
    epoch = state["epoch"]
    if state["epoch_finished"]:
        if not seeded:
            return  # drawn from the global generator, which the user restores
        message = (
            f"the loop resumes at the start of epoch {epoch + 1} of data "
            f"{_short.repr(data)}, a DataLoader whose sampler {_short.repr(sampler)} draws "
            "its order from its own torch.Generator: in this process that generator starts "
            "again from its seed, not from where the uninterrupted run's was after epoch "
            f"{epoch}, so epoch {epoch + 1} will see another order than the uninterrupted "
            "run's (samples in other batches, in another sequence)."
        )
    else:
        if seeded and epoch == 0:
            return  # this process's seed gives epoch 0's order again
        source = "its own torch.Generator" if seeded else "torch's global generator"
        message = (
            f"the loop resumes inside epoch {epoch} of data {_short.repr(data)}, a "
            f"DataLoader whose sampler {_short.repr(sampler)} draws a new random order for "
            f"every pass, from {source}: re-iterated to resume, the epoch draws its order "
            "again from that generator as it is now, not as it was when the epoch began, so "
            "the resumed epoch will see other batches than the uninterrupted run (some "
            "samples twice, some not at all)."
        )
    _warned = True
    warn(
        f"{message} Wrap the DataLoader with dloop_torch.prepare(loader), which saves "
        "the states of the generators the order draws from in the loop's state dict and "
        "replays them."
    )
