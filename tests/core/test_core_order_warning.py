"""A DataLoader-shaped object with a random sampler, resumed without
``dloop_torch.prepare`` where the resumed order will differ (inside an epoch; at an epoch's
end when the sampler has its own seeded generator), gets one warning that says so.

The loaders here only have the shape of a torch DataLoader: the core never imports torch.
"""

from __future__ import annotations

import json
import random
import warnings
from collections.abc import Iterator
from typing import Any

import pytest

from dloop import Loop, LoopWarning, _order_warning


class RandomSampler:
    """Shaped like torch's: a ``generator`` attribute, a new order for every pass."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.generator = None

    def __iter__(self) -> Iterator[int]:
        order = list(range(self.size))
        random.shuffle(order)
        return iter(order)

    def __len__(self) -> int:
        return self.size


class SeededRandomSampler(RandomSampler):
    """A random sampler with a generator of its own (``generator=torch.Generator()
    .manual_seed(0)`` in torch): a new process starts it from the same seed."""

    def __init__(self, size: int, seed: int = 0) -> None:
        super().__init__(size)
        self.generator = random.Random(seed)  # type: ignore[assignment]

    def __iter__(self) -> Iterator[int]:
        order = list(range(self.size))
        self.generator.shuffle(order)  # type: ignore[attr-defined]
        return iter(order)


class SequentialSampler:
    def __init__(self, size: int) -> None:
        self.size = size

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.size))

    def __len__(self) -> int:
        return self.size


class BatchSampler:
    def __init__(self, sampler: Any, batch_size: int) -> None:
        self.sampler = sampler
        self.batch_size = batch_size

    def __iter__(self) -> Iterator[list[int]]:
        batch: list[int] = []
        for index in self.sampler:
            batch.append(index)
            if len(batch) == self.batch_size:
                yield batch
                batch = []
        if batch:
            yield batch

    def __len__(self) -> int:
        return -(-len(self.sampler) // self.batch_size)


class DataLoader:
    """The attributes the core looks at: ``dataset``, ``sampler``, ``batch_sampler``."""

    def __init__(self, size: int, sampler: Any, *, batch_size: int = 2) -> None:
        self.dataset = list(range(size))
        self.sampler = sampler
        self.batch_sampler = BatchSampler(sampler, batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batch_sampler)

    def __len__(self) -> int:
        return len(self.batch_sampler)

    def __repr__(self) -> str:
        return "<DataLoader>"


@pytest.fixture(autouse=True)
def _fresh_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts as a new process would: not warned yet."""
    monkeypatch.setattr(_order_warning, "_warned", False)


def saved_at(data: Any, step: int, *, max_epochs: int = 3) -> dict[str, Any]:
    loop = Loop(data, max_epochs=max_epochs)
    for _ in loop:
        if loop.state.step == step:
            break
    state: dict[str, Any] = json.loads(json.dumps(loop.state_dict()))
    return state


def resume(data: Any, state: dict[str, Any]) -> Loop[Any]:
    loop = Loop(data, max_epochs=3)
    loop.load_state_dict(state)
    return loop


def test_a_mid_epoch_resume_of_a_shuffled_loader_warns_that_the_order_will_differ() -> None:
    state = saved_at(DataLoader(8, RandomSampler(8)), step=5)  # epoch 1, batch 1

    with pytest.warns(LoopWarning, match="the loop resumes inside epoch") as caught:
        resume(DataLoader(8, RandomSampler(8)), state)

    assert len(caught) == 1
    message = str(caught[0].message)
    assert "resumes inside epoch 1 of data <DataLoader>" in message
    assert "will see other batches than the uninterrupted run" in message
    assert "dloop_torch.prepare(loader)" in message


def test_the_warning_comes_once_per_process() -> None:
    state = saved_at(DataLoader(8, RandomSampler(8)), step=5)
    with pytest.warns(UserWarning, match="resumes inside epoch 1"):
        resume(DataLoader(8, RandomSampler(8)), state)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        resume(DataLoader(8, RandomSampler(8)), state)


def test_a_random_sampler_inside_the_batch_sampler_is_found_too() -> None:
    class Loader(DataLoader):
        def __init__(self) -> None:
            super().__init__(8, None)
            self.batch_sampler = BatchSampler(RandomSampler(8), 2)

    state = saved_at(Loader(), step=2)

    with pytest.warns(UserWarning, match="resumes inside epoch 0"):
        resume(Loader(), state)


@pytest.mark.parametrize(
    ("data", "step"),
    [
        pytest.param(DataLoader(8, RandomSampler(8)), 3, id="resume-at-an-epoch-end"),
        pytest.param(DataLoader(8, SequentialSampler(8)), 5, id="sequential-sampler"),
        pytest.param([[0, 1], [2, 3], [4, 5]], 1, id="not-a-dataloader"),
    ],
)
def test_no_warning_where_the_order_does_not_change(data: Any, step: int) -> None:
    state = saved_at(data, step=step)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        resume(data, state)


def test_no_warning_before_the_first_step() -> None:
    loop = Loop(DataLoader(8, RandomSampler(8)), max_epochs=3)
    state = loop.state_dict()

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        resume(DataLoader(8, RandomSampler(8)), state)


def test_no_warning_for_data_whose_hooks_restore_the_order() -> None:
    """What ``dloop_torch.prepare`` returns: the data-state hooks carry the order."""

    class Prepared(DataLoader):
        def dloop_state_dict(self) -> dict[str, int]:
            return {"seed": 1}

        def dloop_load_state_dict(self, state: dict[str, int]) -> None:
            self.loaded = state

    state = saved_at(Prepared(8, RandomSampler(8)), step=5)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        resume(Prepared(8, RandomSampler(8)), state)


def test_a_state_dict_that_is_refused_does_not_warn() -> None:
    state = saved_at(DataLoader(8, RandomSampler(8)), step=5)
    state["epoch"] = -1

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="state dict key 'epoch' has -1"):
            resume(DataLoader(8, RandomSampler(8)), state)


def test_a_resume_at_an_epoch_end_before_an_order_from_a_seeded_generator_warns() -> None:
    """The uninterrupted run's generator had drawn epochs 0 and 1; this process's starts
    again from its seed."""
    state = saved_at(DataLoader(8, SeededRandomSampler(8)), step=7)  # the end of epoch 1

    with pytest.warns(LoopWarning) as caught:
        resume(DataLoader(8, SeededRandomSampler(8)), state)

    assert len(caught) == 1
    message = str(caught[0].message)
    assert "resumes at the start of epoch 2 of data <DataLoader>" in message
    assert "draws its order from its own torch.Generator" in message
    assert "starts again from its seed" in message
    assert "epoch 2 will see another order than the uninterrupted run's" in message
    assert "dloop_torch.prepare(loader)" in message


def test_the_order_a_seeded_generator_gives_after_an_epoch_end_does_differ() -> None:
    """What the warning says, shown: epoch 2 of the resumed run is not the
    uninterrupted run's epoch 2."""
    whole = [batch for batch, _ in Loop(DataLoader(8, SeededRandomSampler(8)), max_epochs=3)]
    state = saved_at(DataLoader(8, SeededRandomSampler(8)), step=7)
    with pytest.warns(LoopWarning):
        rest = [batch for batch, _ in resume(DataLoader(8, SeededRandomSampler(8)), state)]

    assert rest != whole[8:]


def test_a_resume_inside_epoch_1_with_a_seeded_generator_warns() -> None:
    state = saved_at(DataLoader(8, SeededRandomSampler(8)), step=5)

    with pytest.warns(LoopWarning, match="resumes inside epoch 1") as caught:
        resume(DataLoader(8, SeededRandomSampler(8)), state)

    assert "from its own torch.Generator" in str(caught[0].message)


def test_a_resume_inside_epoch_0_with_a_seeded_generator_does_not_warn() -> None:
    """This process seeds the generator as the first one did: epoch 0's order again."""
    whole = [batch for batch, _ in Loop(DataLoader(8, SeededRandomSampler(8)), max_epochs=3)]
    state = saved_at(DataLoader(8, SeededRandomSampler(8)), step=1)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loop = resume(DataLoader(8, SeededRandomSampler(8)), state)
        rest = [batch for batch, _ in loop if loop.state.epoch == 0]

    assert rest == whole[2:4]


def test_the_warning_names_the_sampler_and_data_in_a_few_characters() -> None:
    class Huge(RandomSampler):
        def __repr__(self) -> str:
            return "Huge(" + ", ".join(str(i) for i in range(200_000)) + ")"

    class HugeLoader(DataLoader):
        def __repr__(self) -> str:
            return "HugeLoader" + "!" * 1_000_000

    state = saved_at(HugeLoader(8, Huge(8)), step=5)

    with pytest.warns(LoopWarning) as caught:
        resume(HugeLoader(8, Huge(8)), state)

    message = str(caught[0].message)
    assert len(message) < 1200
    assert "sampler Huge(0, 1, 2" in message
    assert "data HugeLoader!!!" in message
