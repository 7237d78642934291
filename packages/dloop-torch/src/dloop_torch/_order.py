"""What an epoch's order depends on: saved at every epoch start, replayed on a resume.

A DataLoader's order comes from random draws at the start of the epoch: the base seed of
its workers (from ``loader.generator``, else torch's global generator) and the sampler's
draws (from ``sampler.generator``, else the global generator). Saving the state of those
generators when the epoch starts, and setting them back while the resumed epoch makes
the same draws, gives the resumed epoch the uninterrupted order; the global generator is
then put back as the user had it (restored from their checkpoint).
"""

from __future__ import annotations

import base64
import reprlib
import sys
import warnings
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    DistributedSampler,
    RandomSampler,
    SequentialSampler,
    SubsetRandomSampler,
    WeightedRandomSampler,
)
from torch.utils.data.dataloader import _InfiniteConstantSampler

from dloop import LoopWarning

_short = reprlib.Repr()
_short.maxother = 80
_short.maxstring = 80
"""Shortens the objects named in warnings (a sampler's repr may list every index)."""

# Samplers whose draws come only from ``.generator`` or, when it is None, torch's global
# generator: replayed exactly. Recognised by their ``__iter__``, so that a subclass that
# only adds methods (a ``set_epoch``) is known too, and one with its own order is not.
_RANDOM_ITERS: tuple[Any, ...] = (
    RandomSampler.__iter__,
    SubsetRandomSampler.__iter__,
    WeightedRandomSampler.__iter__,
)
# Samplers whose order depends only on their arguments and ``set_epoch``.
_FIXED_ITERS: tuple[Any, ...] = (
    SequentialSampler.__iter__,
    DistributedSampler.__iter__,
    _InfiniteConstantSampler.__iter__,  # the sampler of a DataLoader over an IterableDataset
)
# Batch samplers that batch the indices of their ``.sampler`` in order.
_BATCHING_ITERS: tuple[Any, ...] = (BatchSampler.__iter__,)

_ACCELERATE_SEEDABLE = ("accelerate.data_loader", "SeedableRandomSampler")
"""Accelerate's sampler reseeds its generator with ``initial_seed + epoch`` in every
``__iter__``: its order depends only on ``set_epoch``, which ``prepare`` calls."""
_ACCELERATE_SHARDS = {
    ("accelerate.data_loader", "BatchSamplerShard"): "batch_sampler",
    ("accelerate.data_loader", "SkipBatchSampler"): "batch_sampler",
}
"""Accelerate's batch-sampler wrappers, and the attribute of the batch sampler they wrap."""


def _torchdata_iters() -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """torchdata's stateful RandomSampler and BatchSampler (the ones a StatefulDataLoader
    puts in place of torch's), when torchdata is imported; no import here."""
    module = sys.modules.get("torchdata.stateful_dataloader.sampler")
    if module is None:
        return (), ()
    return (module.RandomSampler.__iter__,), (module.BatchSampler.__iter__,)


def _class_key(obj: object) -> tuple[str, str]:
    kind = type(obj)
    return kind.__module__, kind.__qualname__


@dataclass
class Sources:
    """Where a DataLoader's order comes from.

    ``generators`` are the distinct ``torch.Generator`` objects it draws from (the
    loader's own first); ``uses_global`` says whether it also draws from torch's global
    generator; ``unknown`` lists the samplers whose draws dloop cannot tell.
    ``shuffles`` says whether a random sampler draws the order itself (the other draws
    are the workers' base seed), and ``shuffles_from_global`` whether one draws it from
    torch's global generator.
    """

    generators: list[torch.Generator]
    uses_global: bool
    unknown: list[object]
    shuffles: bool = False
    shuffles_from_global: bool = False


def sources_of(loader: DataLoader[Any]) -> Sources:
    """The random sources of ``loader``'s order (and of its workers' base seed)."""
    generators: list[torch.Generator] = []
    unknown: list[object] = []
    uses_global = shuffles = shuffles_from_global = False

    def add(generator: object) -> None:
        if isinstance(generator, torch.Generator) and not any(
            generator is known for known in generators
        ):
            generators.append(generator)

    if loader.generator is not None:
        add(loader.generator)
    elif loader.num_workers > 0:
        uses_global = True  # the workers' base seed
    random_iters, batching_iters = _torchdata_iters()
    random_iters += _RANDOM_ITERS
    batching_iters += _BATCHING_ITERS

    def visit(sampler: object) -> None:
        nonlocal uses_global, shuffles, shuffles_from_global
        method = getattr(type(sampler), "__iter__", None)
        key = _class_key(sampler)
        if method in random_iters:
            shuffles = True
            generator = getattr(sampler, "generator", None)
            if generator is None:
                uses_global = shuffles_from_global = True
            add(generator)
        elif method in batching_iters:
            visit(getattr(sampler, "sampler", None))
        elif key in _ACCELERATE_SHARDS:
            visit(getattr(sampler, _ACCELERATE_SHARDS[key], None))
        elif method in _FIXED_ITERS or key == _ACCELERATE_SEEDABLE:
            pass
        elif isinstance(sampler, (list, tuple, range)):
            pass  # indices (or batches of them) given as they are: a fixed order
        else:
            unknown.append(sampler)

    visit(loader.batch_sampler if loader.batch_sampler is not None else loader.sampler)
    return Sources(generators, uses_global, unknown, shuffles, shuffles_from_global)


@dataclass
class EpochStart:
    """The states of an order's random sources when an epoch started."""

    epoch: int
    global_state: torch.Tensor | None
    generator_states: list[torch.Tensor]
    draws_base_seed: bool
    """Whether the epoch's first ``iter(loader)`` drew the workers' base seed (it does
    not when persistent workers already run)."""


def record(sources: Sources, epoch: int, *, draws_base_seed: bool) -> EpochStart:
    """The states of ``sources`` now, as the start of ``epoch``."""
    return EpochStart(
        epoch=epoch,
        global_state=torch.get_rng_state() if sources.uses_global else None,
        generator_states=[generator.get_state() for generator in sources.generators],
        draws_base_seed=draws_base_seed,
    )


@contextmanager
def replaying(sources: Sources, start: EpochStart | None) -> Iterator[None]:
    """Inside: the sources as they were at ``start`` (nothing changes for None). After:
    torch's global generator back as it was before, whatever was drawn from it inside
    (the draws of a replay, samples loaded to be dropped: the uninterrupted run made
    them before the state the user restored); the loader's generators are left as the
    replayed draws leave them, where the uninterrupted run's would be."""
    if start is None:
        yield
        return
    user_state = torch.get_rng_state()
    if start.global_state is not None:
        torch.set_rng_state(start.global_state)
    for generator, state in zip(sources.generators, start.generator_states, strict=True):
        generator.set_state(state)
    try:
        yield
    finally:
        torch.set_rng_state(user_state)


def encode_state(state: torch.Tensor) -> str:
    """A generator state (a uint8 tensor) as a short ASCII string for a JSON state dict."""
    raw = bytes(state.contiguous().tolist())
    return base64.b64encode(zlib.compress(raw)).decode("ascii")


def decode_state(text: str, *, name: str) -> torch.Tensor:
    """The inverse of ``encode_state``; ``ValueError`` naming ``name`` for a bad string."""
    try:
        raw = zlib.decompress(base64.b64decode(text.encode("ascii"), validate=True))
    except (ValueError, zlib.error, UnicodeEncodeError):
        raise ValueError(
            f"state dict data[{name!r}] is not a generator state saved by dloop_torch"
        ) from None
    return torch.frombuffer(bytearray(raw), dtype=torch.uint8).clone()


def unknown_warning(samplers: list[object]) -> str:
    """The message for samplers whose order a resume cannot reproduce."""
    names = ", ".join(
        f"{type(sampler).__qualname__} ({_short.repr(sampler)})" for sampler in samplers
    )
    return (
        f"dloop_torch cannot reproduce the order of {names} on a resume: it replays the "
        "torch generators of the samplers it knows (RandomSampler, SubsetRandomSampler, "
        "WeightedRandomSampler, SequentialSampler, DistributedSampler, a BatchSampler over "
        "one of them, Accelerate's SeedableRandomSampler and torchdata's samplers), not "
        "this one's. A run resumed inside an epoch may see another order than the "
        "uninterrupted one. Use one of those samplers (for a custom order, a "
        "DistributedSampler-like sampler that draws from a torch.Generator seeded with "
        "seed + epoch in set_epoch); if this sampler's order depends only on "
        "set_epoch(epoch), silence this warning with "
        "warnings.filterwarnings('ignore', message='dloop_torch cannot reproduce')."
    )


def no_record_warning(data: object, epoch: int, start: int, sources: Sources) -> str:
    """The message for a resume inside an epoch with no record of its order."""
    source = (
        "torch's global generator"
        if sources.shuffles_from_global
        else "the sampler's torch.Generator as this process seeded it"
    )
    return (
        f"prepare({_short.repr(data)}) resumes epoch {epoch} at batch {start}, but the "
        "loop's state dict holds no record of that epoch's order (its 'data' entry is "
        "None: it was saved by a Loop over the DataLoader itself, without prepare()). The "
        f"epoch's order is drawn again from {source}, not as it was when the epoch began, "
        "so the resumed epoch sees other batches than the uninterrupted run (some samples "
        "twice, some not at all). State dicts saved by a Loop over prepare(loader) carry "
        "the order."
    )


def warn_user(message: str) -> None:
    """Warn with ``LoopWarning``, attributed to the first caller outside dloop and
    dloop_torch (the user's ``for`` loop or ``state_dict()`` call), however deep in the
    core and the adapter the warning is raised. (``dloop._warnings.warn`` does the same
    but skips the core's frames only: from here it would point into dloop_torch.)"""
    level = 2  # for warnings.warn, 1 is this function and 2 the one that called it
    frame = sys._getframe(1)
    while frame.f_back is not None and frame.f_globals.get("__name__", "").startswith(
        ("dloop.", "dloop_torch.")
    ):
        frame = frame.f_back
        level += 1
    warnings.warn(message, LoopWarning, stacklevel=level)


class Order:
    """The order of one DataLoader across epochs: the start of the current epoch, and a
    saved one to replay after ``load_state_dict``."""

    __slots__ = ("_current", "_loaded", "sources")

    def __init__(self, loader: DataLoader[Any]) -> None:
        self.sources = sources_of(loader)
        self._current: EpochStart | None = None
        self._loaded: tuple[int, EpochStart | None, list[torch.Tensor]] | None = None

    def replays_unrecorded(self, epoch: int, start: int) -> bool:
        """Whether opening ``epoch`` at batch ``start`` resumes inside it with no record of
        its order (nothing loaded) where the order then differs: a random sampler drawing
        from torch's global generator (the user restored it later than the epoch's
        draws), or from its own generator in an epoch after the first (this process
        seeded it as for epoch 0)."""
        return (
            start > 0
            and self._loaded is None
            and self._current is None
            and self.sources.shuffles
            and (epoch > 0 or self.sources.shuffles_from_global)
        )

    def begin(self, epoch: int, start: int, *, draws_base_seed: bool) -> EpochStart | None:
        """Open ``epoch`` at batch ``start``: the epoch start to replay, or None when the
        loader is simply iterated (a fresh epoch, its start recorded).

        After ``load_state_dict``: the saved epoch is replayed from its saved start; an
        epoch after it starts with the generators as they were when the state was saved.
        A mid-epoch start with nothing saved is replayed from the sources as they are, so
        that its draws leave torch's global generator untouched.
        """
        loaded, self._loaded = self._loaded, None
        if loaded is not None:
            saved_epoch, saved_start, now = loaded
            if saved_start is not None and saved_epoch == epoch:
                saved_start.draws_base_seed = draws_base_seed
                self._current = saved_start
                return saved_start
            for generator, state in zip(self.sources.generators, now, strict=True):
                generator.set_state(state)
        self._current = record(self.sources, epoch, draws_base_seed=draws_base_seed)
        return None if start == 0 else self._current

    def state_dict(self, epoch: int) -> dict[str, Any]:
        """The JSON part of a state dict: the current epoch's start and the generators now.

        Warns (``dloop.LoopWarning``) when a sampler's order cannot be replayed.
        """
        if self.sources.unknown:
            warn_user(unknown_warning(self.sources.unknown))
        current = self._current
        start: dict[str, Any] | None = None
        if current is not None:
            epoch = current.epoch
            start = {
                "global": None
                if current.global_state is None
                else encode_state(current.global_state),
                "generators": [encode_state(state) for state in current.generator_states],
            }
        return {
            "epoch": epoch,
            "start": start,
            "generators": [encode_state(g.get_state()) for g in self.sources.generators],
        }

    def load_state_dict(self, state: object) -> None:
        """Take back what ``state_dict`` gave, for the next ``begin``.

        Raises:
            ValueError: ``state`` is not such a part, or comes from a loader with another
                number of generators.
        """
        count = len(self.sources.generators)
        if not (
            isinstance(state, dict)
            and isinstance(state.get("epoch"), int)
            and isinstance(state.get("generators"), list)
            and (state.get("start") is None or isinstance(state.get("start"), dict))
        ):
            raise ValueError(
                "state dict data['order'] must be {'epoch': int, 'start': dict or None, "
                f"'generators': list}} as dloop_torch saves it, got {state!r}"
            )
        saved = state["generators"]
        start = state["start"]
        if len(saved) != count or (start is not None and len(start.get("generators", ())) != count):
            raise ValueError(
                f"state dict data['order'] holds {len(saved)} generator states, but this "
                f"DataLoader's order draws from {count} torch.Generator(s): resume with the "
                "same DataLoader configuration (shuffle, generator=, sampler)"
            )
        now = [decode_state(text, name="generators") for text in saved]
        epoch_start = None
        if start is not None:
            global_text = start.get("global")
            epoch_start = EpochStart(
                epoch=state["epoch"],
                global_state=None
                if global_text is None
                else decode_state(global_text, name="global"),
                generator_states=[
                    decode_state(text, name="generators") for text in start["generators"]
                ],
                draws_base_seed=True,
            )
        self._loaded = (state["epoch"], epoch_start, now)
