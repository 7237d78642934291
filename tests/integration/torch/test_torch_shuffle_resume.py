"""A resumed ``shuffle=True`` DataLoader sees the order of the uninterrupted run.

Each run is a "process" of its own: the program seeds torch, builds a fresh DataLoader
(fresh generator and sampler objects), and a resumed run loads the loop's state dict
(through JSON) and the global RNG state saved with it, as the PyTorch page shows. The
training step draws from torch's global generator (as dropout does), so that a resume that
disturbed it would show in the recorded draws.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch
from _torch_data import RecordingDataset, SeedableRandomSampler
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    RandomSampler,
    Sampler,
    SubsetRandomSampler,
    WeightedRandomSampler,
)

from dloop import Loop, LoopWarning
from dloop_torch import prepare

EPOCHS = 3
PROGRAM_SEED = 1234
CI = os.environ.get("HYPOTHESIS_PROFILE") == "ci"

SAMPLERS = [
    "shuffle",
    "random-replacement",
    "random-num-samples",
    "subset",
    "weighted",
    "batch-sampler",
    "seedable",
    "unbatched",
]


def make_loader(
    dataset: RecordingDataset,
    sampler: str,
    *,
    batch_size: int,
    drop_last: bool,
    workers: int,
    seeded: bool,
    persistent: bool = False,
) -> DataLoader[Any]:
    """A fresh DataLoader of the given kind (as a new process would build it)."""
    generator = torch.Generator().manual_seed(7) if seeded else None
    size = len(dataset)
    options: dict[str, Any] = {"num_workers": workers, "persistent_workers": persistent}
    if sampler == "shuffle":
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=True,
            drop_last=drop_last,
            generator=generator,
            **options,
        )
    chosen: Sampler[int]
    if sampler == "random-replacement":
        chosen = RandomSampler(
            dataset, replacement=True, num_samples=size + 37, generator=generator
        )
    elif sampler == "random-num-samples":
        chosen = RandomSampler(dataset, num_samples=2 * size + 1, generator=generator)
    elif sampler == "subset":
        chosen = SubsetRandomSampler(list(range(0, size, 2)) or [0], generator=generator)
    elif sampler == "weighted":
        weights = [1.0 + index % 3 for index in range(size)]
        chosen = WeightedRandomSampler(weights, num_samples=size, generator=generator)
    elif sampler == "seedable":
        chosen = SeedableRandomSampler(dataset, generator=generator, data_seed=11)
    elif sampler == "batch-sampler":
        batches = BatchSampler(RandomSampler(dataset, generator=generator), batch_size, drop_last)
        return DataLoader(dataset, batch_sampler=batches, **options)
    elif sampler == "unbatched":
        return DataLoader(
            dataset,
            sampler=RandomSampler(dataset, generator=generator),
            batch_size=None,
            **options,
        )
    else:
        raise AssertionError(sampler)
    return DataLoader(
        dataset, batch_size=batch_size, sampler=chosen, drop_last=drop_last, **options
    )


Step = tuple[list[int], list[str], float]


def train(
    build: Callable[[], DataLoader[Any]],
    *,
    stop_at: int | None = None,
    checkpoint: dict[str, Any] | None = None,
) -> tuple[list[Step], dict[str, Any]]:
    """One process: the steps it sees (ids, events, the step's own random draw), and a
    checkpoint taken at ``stop_at`` (or at the end)."""
    torch.manual_seed(PROGRAM_SEED)
    loop = Loop(prepare(build()), max_epochs=EPOCHS)
    if checkpoint is not None:
        loop.load_state_dict(json.loads(checkpoint["loop"]))
        torch.set_rng_state(checkpoint["rng"])
    steps: list[Step] = []
    for batch, events in loop:
        draw = float(torch.rand(()))  # the user's step uses the global generator
        ids = [int(i) for i in torch.as_tensor(batch).flatten()]
        steps.append((ids, sorted(str(event) for event in events), draw))
        if loop.state.step == stop_at:
            break
    saved = {"loop": json.dumps(loop.state_dict()), "rng": torch.get_rng_state()}
    return steps, saved


def check_every_cut(build: Callable[[], DataLoader[Any]], cuts: list[int]) -> None:
    uninterrupted, end = train(build)
    for cut in cuts:
        if cut >= len(uninterrupted) - 1:
            continue
        before, checkpoint = train(build, stop_at=cut)
        assert before == uninterrupted[: cut + 1]

        after, resumed_end = train(build, checkpoint=checkpoint)

        assert after == uninterrupted[cut + 1 :], f"resumed after step {cut}"
        # The user's global generator ends where the uninterrupted run's does.
        assert torch.equal(resumed_end["rng"], end["rng"])


@settings(max_examples=15 if CI else 40, deadline=None, derandomize=CI)
@given(
    sampler=st.sampled_from(SAMPLERS),
    size=st.integers(1, 23),
    batch_size=st.integers(1, 6),
    drop_last=st.booleans(),
    seeded=st.booleans(),
    data=st.data(),
)
def test_a_resume_in_any_epoch_sees_the_uninterrupted_order_without_workers(
    sampler: str, size: int, batch_size: int, drop_last: bool, seeded: bool, data: Any
) -> None:
    dataset = RecordingDataset(size)

    def build() -> DataLoader[Any]:
        return make_loader(
            dataset, sampler, batch_size=batch_size, drop_last=drop_last, workers=0, seeded=seeded
        )

    length = len(build())
    if length == 0:
        return
    # One cut in every epoch (its first, last or any batch), and the very first step.
    cuts = [0] + [
        epoch * length + data.draw(st.integers(0, length - 1), label=f"cut in epoch {epoch}")
        for epoch in range(EPOCHS)
    ]
    check_every_cut(build, cuts)


@pytest.mark.slow
@settings(max_examples=6 if CI else 12, deadline=None, derandomize=CI)
@given(
    sampler=st.sampled_from(["shuffle", "random-replacement", "batch-sampler", "weighted"]),
    size=st.integers(5, 17),
    batch_size=st.integers(1, 4),
    drop_last=st.booleans(),
    seeded=st.booleans(),
    persistent=st.booleans(),
    data=st.data(),
)
def test_a_resume_in_any_epoch_sees_the_uninterrupted_order_with_two_workers(
    sampler: str,
    size: int,
    batch_size: int,
    drop_last: bool,
    seeded: bool,
    persistent: bool,
    data: Any,
) -> None:
    dataset = RecordingDataset(size)

    def build() -> DataLoader[Any]:
        return make_loader(
            dataset,
            sampler,
            batch_size=batch_size,
            drop_last=drop_last,
            workers=2,
            seeded=seeded,
            persistent=persistent,
        )

    length = len(build())
    cuts = [epoch * length + data.draw(st.integers(0, length - 1)) for epoch in range(EPOCHS)]
    check_every_cut(build, cuts)


@pytest.mark.parametrize("sampler", SAMPLERS)
@pytest.mark.parametrize("seeded", [True, False], ids=["seeded-generator", "global-rng"])
def test_prepare_keeps_the_order_the_dataloader_gives_by_itself(sampler: str, seeded: bool) -> None:
    def build() -> DataLoader[Any]:
        return make_loader(
            RecordingDataset(10), sampler, batch_size=3, drop_last=False, workers=0, seeded=seeded
        )

    through_prepare = [ids for ids, _, _ in train(build)[0]]
    torch.manual_seed(PROGRAM_SEED)
    loader = build()
    by_hand = []
    for epoch in range(EPOCHS):
        targets: list[Any] = [loader.sampler, loader.batch_sampler]
        for target in {id(target): target for target in targets}.values():
            if hasattr(target, "set_epoch"):
                target.set_epoch(epoch)
        for batch in loader:
            by_hand.append([int(i) for i in torch.as_tensor(batch).flatten()])
            torch.rand(())  # the same draws as train()'s step
    assert through_prepare == by_hand


@pytest.mark.parametrize("seeded", [True, False], ids=["seeded-generator", "global-rng"])
@pytest.mark.parametrize("cut", [3, 8, 14])
def test_the_issue_table_24_samples_in_batches_of_4(seeded: bool, cut: int) -> None:
    dataset = RecordingDataset(24)

    def build() -> DataLoader[Any]:
        return make_loader(
            dataset, "shuffle", batch_size=4, drop_last=False, workers=0, seeded=seeded
        )

    check_every_cut(build, [cut])


@pytest.mark.parametrize("sampler", ["shuffle", "unbatched", "batch-sampler"])
@pytest.mark.parametrize("cut", [5, 11], ids=["end-of-epoch-0", "end-of-epoch-1"])
def test_a_resume_at_an_epoch_end_sees_the_next_epochs_uninterrupted_order(
    sampler: str, cut: int
) -> None:
    """Epochs of 6 full batches: the sampler's last draw comes only when its iterator is
    asked once more after the last index, which the loop does only in the uninterrupted
    run (when it opens the next epoch)."""
    size = {"shuffle": 24, "unbatched": 6, "batch-sampler": 24}[sampler]

    def build() -> DataLoader[Any]:
        return make_loader(
            RecordingDataset(size), sampler, batch_size=4, drop_last=False, workers=0, seeded=True
        )

    assert len(build()) == 6
    check_every_cut(build, [cut])


@pytest.mark.parametrize("seeded", [True, False], ids=["seeded-generator", "global-rng"])
def test_a_resume_loads_only_the_samples_of_the_batches_still_to_come(seeded: bool) -> None:
    dataset = RecordingDataset(22)

    def build() -> DataLoader[Any]:
        return make_loader(
            dataset, "shuffle", batch_size=4, drop_last=False, workers=0, seeded=seeded
        )

    uninterrupted, _ = train(build)
    _, checkpoint = train(build, stop_at=8)  # epoch 1, batch 2 of 6
    dataset.loaded.clear()

    after, _ = train(build, checkpoint=checkpoint)

    assert after == uninterrupted[9:]
    assert dataset.loaded == [i for ids, _, _ in after for i in ids]


class CoinSampler(Sampler[int]):
    """A sampler of its own making: dloop cannot know what its order depends on."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __iter__(self) -> Any:
        return iter(torch.randperm(self.size).tolist())

    def __len__(self) -> int:
        return self.size


def test_a_sampler_dloop_cannot_replay_is_named_at_state_dict() -> None:
    loader = DataLoader(RecordingDataset(8), batch_size=2, sampler=CoinSampler(8))
    loop = Loop(prepare(loader), max_epochs=1)
    next(iter(loop))

    with pytest.warns(UserWarning, match=r"cannot reproduce the order of CoinSampler \(<") as got:
        loop.state_dict()

    message = str(got[0].message)
    assert "Use one of those samplers" in message
    assert "RandomSampler" in message
    assert got[0].filename == __file__  # pointed at the user's state_dict() line


@pytest.mark.parametrize("kind", ["list", "tuple", "range", "batch-list"])
def test_indices_given_as_a_sequence_are_a_fixed_order_with_no_warning(kind: str) -> None:
    """A list (tuple, range) as ``sampler=`` or ``batch_sampler=``: nothing to reproduce,
    and a resume inside an epoch skips by index in that order."""
    size = 200_000
    order = list(range(size - 1, -1, -1))
    dataset = RecordingDataset(size)

    def build() -> DataLoader[Any]:
        if kind == "batch-list":
            batches = [order[i : i + 2] for i in range(0, 10, 2)]
            return DataLoader(dataset, batch_sampler=batches)
        sampler: Any = {"list": order, "tuple": tuple(order), "range": range(size - 1, -1, -1)}
        return DataLoader(dataset, batch_size=2, sampler=sampler[kind])

    loop = Loop(prepare(build()), max_steps=5)
    for _ in loop:
        if loop.state.step == 2:
            break
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        state = json.loads(json.dumps(loop.state_dict()))
    dataset.loaded.clear()

    resumed = Loop(prepare(build()), max_steps=5)
    resumed.load_state_dict(state)
    rest = [[int(i) for i in batch] for batch, _ in resumed]

    assert rest == [order[6:8], order[8:10]]
    assert dataset.loaded == order[6:10]


def test_a_sampler_with_a_huge_repr_is_named_in_a_few_characters() -> None:
    class Listed(CoinSampler):
        def __repr__(self) -> str:
            return "Listed(" + ", ".join(str(i) for i in range(200_000)) + ")"

    loader = DataLoader(RecordingDataset(8), batch_size=2, sampler=Listed(8))
    loop = Loop(prepare(loader), max_epochs=1)
    next(iter(loop))

    with pytest.warns(
        LoopWarning, match=r"cannot reproduce the order of .*Listed \(Listed\(0, 1"
    ) as got:
        loop.state_dict()

    assert len(str(got[0].message)) < 1500


def test_a_subclass_of_a_known_sampler_with_its_own_order_is_not_trusted() -> None:
    class Reversed(RandomSampler):
        def __iter__(self) -> Any:
            return reversed(list(super().__iter__()))

    loader = DataLoader(RecordingDataset(8), batch_size=2, sampler=Reversed(RecordingDataset(8)))
    loop = Loop(prepare(loader), max_epochs=1)
    next(iter(loop))

    with pytest.warns(UserWarning, match="cannot reproduce the order of .*Reversed"):
        loop.state_dict()


def test_a_state_dict_from_another_loader_configuration_is_refused() -> None:
    seeded = make_loader(
        RecordingDataset(8), "shuffle", batch_size=2, drop_last=False, workers=0, seeded=True
    )
    loop = Loop(prepare(seeded), max_epochs=2)
    next(iter(loop))
    state = loop.state_dict()
    unseeded = DataLoader(RecordingDataset(8), batch_size=2, shuffle=True)
    resumed = Loop(prepare(unseeded), max_epochs=2)

    with pytest.raises(ValueError, match=r"holds 1 generator states, but this DataLoader's"):
        resumed.load_state_dict(state)


def state_without_prepare(build: Callable[[], DataLoader[Any]], cut: int) -> dict[str, Any]:
    """The state dict of a Loop over the DataLoader itself (no prepare), after ``cut``."""
    torch.manual_seed(PROGRAM_SEED)
    loop = Loop(build(), max_epochs=EPOCHS)
    for _ in loop:
        if loop.state.step == cut:
            break
    state: dict[str, Any] = json.loads(json.dumps(loop.state_dict()))
    assert state["data"] is None
    return state


@pytest.mark.parametrize(
    ("seeded", "cut"),
    [
        pytest.param(True, 6, id="seeded-generator-epoch-1"),
        pytest.param(False, 1, id="global-generator-epoch-0"),
        pytest.param(False, 6, id="global-generator-epoch-1"),
    ],
)
def test_a_state_saved_without_prepare_resumed_inside_a_shuffled_epoch_warns(
    seeded: bool, cut: int
) -> None:
    def build() -> DataLoader[Any]:
        return make_loader(
            RecordingDataset(16), "shuffle", batch_size=4, drop_last=False, workers=0, seeded=seeded
        )

    state = state_without_prepare(build, cut)
    loop = Loop(prepare(build()), max_epochs=EPOCHS)
    loop.load_state_dict(state)

    with pytest.warns(LoopWarning, match="holds no record of that epoch's order") as caught:
        next(iter(loop))

    message = str(caught[0].message)
    assert f"resumes epoch {cut // 4} at batch {cut % 4 + 1}" in message
    assert "saved by a Loop over the DataLoader itself, without prepare()" in message
    assert "sees other batches than the uninterrupted run" in message
    assert caught[0].filename == __file__  # pointed at the user's line


def test_a_state_saved_without_prepare_inside_epoch_0_of_a_seeded_loader_resumes_exactly() -> None:
    """This process seeds the generator as the first did: epoch 0's order is the same."""

    def build() -> DataLoader[Any]:
        return make_loader(
            RecordingDataset(16), "shuffle", batch_size=4, drop_last=False, workers=0, seeded=True
        )

    whole = [[int(i) for i in batch] for batch, _ in Loop(build(), max_epochs=EPOCHS)]
    state = state_without_prepare(build, 1)
    loop = Loop(prepare(build()), max_epochs=EPOCHS)
    loop.load_state_dict(state)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rest = [[int(i) for i in batch] for batch, _ in loop]

    assert rest[:2] == whole[2:4]
