"""Rule 28: uneven data across processes, with threads standing in for processes.

Each thread runs its own ``Loop`` over its own data, of its own length; they share one
``dloop.testing.ThreadSync`` whose timeout turns a hang into a failure. Every process must
yield the same steps and events, end each epoch where the shortest process's epoch ends
(``uneven="shortest"``) or the longest's (``"longest"``, the others padding), and never
wait in a ``combine`` the others do not join.
"""

from __future__ import annotations

import json
import re
import threading
import warnings
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import pytest
from _core_reference import EPOCH_END, TRAINING_END
from hypothesis import given
from hypothesis import strategies as st

from dloop import Event, Loop, LoopEvents, LoopWarning
from dloop.testing import ManualClock, ThreadSync

PADDING = LoopEvents.PADDING
SYNC_TIMEOUT = 10.0
JOIN_TIMEOUT = 30.0


class Shard:
    """Re-iterable data of one process: epoch ``e`` yields ``lengths[e]`` batches
    ``(rank, e, index)``; sized (``len``) or not."""

    def __init__(self, rank: int, lengths: Sequence[int], *, sized: bool) -> None:
        self.rank = rank
        self.lengths = list(lengths)
        self.sized = sized
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[tuple[int, int, int]]:
        epoch = self.epoch
        length = self.lengths[epoch % len(self.lengths)]
        return iter([(self.rank, epoch, index) for index in range(length)])


class SizedShard(Shard):
    def __len__(self) -> int:
        return self.lengths[self.epoch % len(self.lengths)]


class SkippingShard(Shard):
    """Unsized, with an adapter's ``iter_from``: a resume past this process's end of the
    epoch gets an empty iterator (the loop then knows the epoch ended before)."""

    def iter_from(self, start: int) -> Iterator[tuple[int, int, int]]:
        batches = list(iter(self))
        return iter(batches[start:])


def make_data(kind: str, rank: int, lengths: Sequence[int]) -> Any:
    if kind == "sized":
        return SizedShard(rank, lengths, sized=True)
    if kind == "unsized":
        return Shard(rank, lengths, sized=False)
    if kind == "skipping":
        return SkippingShard(rank, lengths, sized=False)
    return iter([(rank, 0, index) for index in range(lengths[0])])  # a one-shot stream


@dataclass
class Trace:
    """What one process saw."""

    steps: list[tuple[int, int, int, frozenset[Hashable]]]
    batches: list[Any]
    epoch_lengths: list[int | None]
    total_steps: int | None
    loop: Loop[Any]
    states: dict[int, Any]
    """With ``keep_states``: the state dict taken in the body of that step (-1: each)."""


def run_processes(
    make_loop: Callable[[int, ThreadSync], Loop[Any]],
    count: int,
    *,
    every_n_steps: int,
    until_step: int | None = None,
    keep_states: int | None = None,
) -> list[Trace]:
    """One thread per process, all agreeing through one ThreadSync."""
    sync = ThreadSync(count, every_n_steps=every_n_steps, timeout=SYNC_TIMEOUT)
    traces: list[Trace | None] = [None] * count
    errors: list[BaseException] = []

    def work(rank: int) -> None:
        try:
            loop = make_loop(rank, sync)
            steps, batches, lengths, states = [], [], [], {}
            for batch, events in loop:
                state = loop.state
                steps.append((state.step, state.epoch, state.epoch_step, events))
                batches.append(batch)
                lengths.append(state.epoch_length)
                if keep_states in (state.step, -1):  # (-1: every step)
                    states[state.step] = json.loads(json.dumps(loop.state_dict()))
                if state.step == until_step:
                    break
            traces[rank] = Trace(steps, batches, lengths, loop.state.total_steps, loop, states)
        except BaseException as error:  # handed to the main thread
            errors.append(error)

    threads = [threading.Thread(target=work, args=(rank,)) for rank in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=JOIN_TIMEOUT)
    assert not any(thread.is_alive() for thread in threads), "a process hung"
    if errors:
        raise errors[0]
    return [trace for trace in traces if trace is not None]


def quietly(function: Callable[[], Any]) -> Any:
    """Run ``function`` with LoopWarnings recorded (not raised) in every thread."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", LoopWarning)
        result = function()
    return result, [str(warning.message) for warning in caught]


def epoch_ends(trace: Trace) -> list[int]:
    return [step for step, _, _, events in trace.steps if EPOCH_END in events]


# ---------------------------------------------------------------- the cases


@pytest.mark.parametrize("every", [1, 3, 4, 16])
@pytest.mark.parametrize("kind", ["sized", "unsized"])
def test_ten_and_seven_batches_end_every_epoch_on_the_shortest_everywhere(
    kind: str, every: int
) -> None:
    def make(rank: int, sync: ThreadSync) -> Loop[Any]:
        return Loop(make_data(kind, rank, [(10, 7)[rank]]), max_epochs=2, sync=sync)

    traces, messages = quietly(lambda: run_processes(make, 2, every_n_steps=every))
    assert traces[0].steps == traces[1].steps
    assert epoch_ends(traces[0]) == [6, 13]
    assert TRAINING_END in traces[0].steps[-1][3]
    assert traces[0].batches == [(0, e, i) for e in range(2) for i in range(7)]
    assert traces[1].batches == [(1, e, i) for e in range(2) for i in range(7)]
    if kind == "sized":
        assert sorted(messages) == [
            f"this process leaves 3 batches of epoch {epoch} unused: another process's epoch "
            f'ended first, at step {step} (uneven="shortest"; uneven="longest" pads instead)'
            for epoch, step in ((0, 6), (1, 13))
        ]
        assert traces[0].epoch_lengths == [7] * 14  # the agreed length
        assert traces[0].total_steps == traces[1].total_steps == 14
    else:
        # As many as it read ahead (exactly 3 when the look-ahead reached its epoch's end).
        assert len(messages) == 2
        assert all(
            re.search(r"leaves (at least \d+ batch(es)?|3 batches) of epoch", m) for m in messages
        )


def test_streams_of_ten_and_seven_end_the_run_together_when_the_shorter_runs_out() -> None:
    def make(rank: int, sync: ThreadSync) -> Loop[Any]:
        return Loop(make_data("stream", rank, [(10, 7)[rank]]), max_steps=100, sync=sync)

    traces, messages = quietly(lambda: run_processes(make, 2, every_n_steps=4))
    assert traces[0].steps == traces[1].steps
    assert [step for step, *_ in traces[0].steps] == list(range(7))
    assert traces[0].steps[-1][3] == frozenset({EPOCH_END, TRAINING_END})
    assert any("data ended at step 6, before max_steps=100" in m for m in messages)
    assert any(
        "stream had at least 1 batch more when the run ended at step 6" in m for m in messages
    )


def test_a_stream_cut_into_epochs_ends_the_run_where_the_shortest_stream_ends() -> None:
    def make(rank: int, sync: ThreadSync) -> Loop[Any]:
        return Loop(
            make_data("stream", rank, [(11, 9)[rank]]),
            epoch_length=4,
            max_epochs=5,
            sync=sync,
        )

    traces, _ = quietly(lambda: run_processes(make, 2, every_n_steps=3))
    assert traces[0].steps == traces[1].steps
    assert epoch_ends(traces[0]) == [3, 7]
    assert traces[0].steps[-1][0] == 8
    assert TRAINING_END in traces[0].steps[-1][3]


def test_sized_and_unsized_processes_agree_with_each_other() -> None:
    def make(rank: int, sync: ThreadSync) -> Loop[Any]:
        return Loop(
            make_data(("sized", "unsized")[rank], rank, [(5, 8)[rank]]), max_epochs=3, sync=sync
        )

    traces, _ = quietly(lambda: run_processes(make, 2, every_n_steps=2))
    assert traces[0].steps == traces[1].steps
    assert epoch_ends(traces[0]) == [4, 9, 14]


@pytest.mark.parametrize("lengths", [(10, 3), (3, 10)])
def test_a_sized_process_reports_the_agreed_epoch_length_not_its_own(
    lengths: tuple[int, int],
) -> None:
    """Next to an unsized process, the length is unknown until agreed, then the agreed
    one, on every process alike; a state dict of either process resumes both."""

    def make(rank: int, sync: ThreadSync) -> Loop[Any]:
        kind = ("sized", "unsized")[rank]
        return Loop(make_data(kind, rank, [lengths[rank]]), max_epochs=2, sync=sync)

    traces, _ = quietly(lambda: run_processes(make, 2, every_n_steps=2))
    assert traces[0].epoch_lengths == traces[1].epoch_lengths
    assert set(traces[0].epoch_lengths) <= {None, 3}
    assert traces[0].epoch_lengths[2] == 3  # known by the epoch's last step
    assert_resumes_from_any_process(make, 2, every_n_steps=2)


@pytest.mark.parametrize("kind", ["sized", "unsized", "stream"])
def test_longest_pads_the_shorter_processes_and_every_sample_counts_once(kind: str) -> None:
    lengths = (10, 7, 3)

    def make(rank: int, sync: ThreadSync) -> Loop[Any]:
        return Loop(
            make_data(kind, rank, [lengths[rank]]),
            max_epochs=1,
            max_steps=None if kind != "stream" else 100,
            sync=sync,
            uneven="longest",
        )

    traces, messages = quietly(lambda: run_processes(make, 3, every_n_steps=4))
    untagged = [[(s, e, es, events - {PADDING}) for s, e, es, events in t.steps] for t in traces]
    assert untagged[0] == untagged[1] == untagged[2]
    assert all(len(trace.steps) == 10 for trace in traces)
    for rank, trace in enumerate(traces):
        padding = [events for *_, events in trace.steps if PADDING in events]
        assert len(padding) == 10 - lengths[rank]
        assert trace.batches[lengths[rank] :] == [None] * (10 - lengths[rank])
    real = [batch for trace in traces for batch in trace.batches if batch is not None]
    assert sorted(real) == sorted((rank, 0, i) for rank in range(3) for i in range(lengths[rank]))
    assert not any("unused" in message for message in messages)


def test_longest_over_several_epochs_pads_every_epoch_to_the_longest() -> None:
    def make(rank: int, sync: ThreadSync) -> Loop[Any]:
        lengths = ([2, 6], [5, 3])[rank]
        return Loop(
            SizedShard(rank, lengths, sized=True), max_epochs=2, sync=sync, uneven="longest"
        )

    traces, _ = quietly(lambda: run_processes(make, 2, every_n_steps=3))
    assert epoch_ends(traces[0]) == epoch_ends(traces[1]) == [4, 10]
    assert traces[0].batches.count(None) == 3
    assert traces[1].batches.count(None) == 3


def test_an_empty_epoch_on_one_process_fails_on_every_process_with_shortest() -> None:
    def make(rank: int, sync: ThreadSync) -> Loop[Any]:
        return Loop(SizedShard(rank, ([3], [0])[rank], sized=True), max_epochs=1, sync=sync)

    with pytest.raises(ValueError, match=r"no batch in epoch 0 on at least one process"):
        run_processes(make, 2, every_n_steps=2)


def test_an_empty_epoch_on_one_process_pads_with_longest() -> None:
    def make(rank: int, sync: ThreadSync) -> Loop[Any]:
        return Loop(
            SizedShard(rank, ([3], [0])[rank], sized=True),
            max_epochs=1,
            sync=sync,
            uneven="longest",
        )

    traces, _ = quietly(lambda: run_processes(make, 2, every_n_steps=2))
    assert traces[1].batches == [None, None, None]


def test_processes_configured_differently_fail_together_instead_of_hanging() -> None:
    def make(rank: int, sync: ThreadSync) -> Loop[Any]:
        return Loop(range(10), max_steps=(10, 12)[rank], sync=sync)

    with pytest.raises(ValueError, match=r"configured their loops differently"):
        run_processes(make, 2, every_n_steps=4)


def test_equal_data_behaves_as_without_a_sync() -> None:
    events = {
        "a": Event(every_n_steps=3),
        "b": Event(at_step=[4, 11]),
        "c": Event(every_n_epochs=2),
    }

    def make(rank: int, sync: ThreadSync) -> Loop[Any]:
        return Loop(SizedShard(rank, [6, 4], sized=True), max_epochs=4, events=events, sync=sync)

    traces, messages = quietly(lambda: run_processes(make, 2, every_n_steps=4))
    alone = Loop(SizedShard(0, [6, 4], sized=True), max_epochs=4, events=events)
    expected = []
    for _, fired in alone:
        state = alone.state
        expected.append((state.step, state.epoch, state.epoch_step, fired))
    assert traces[0].steps == traces[1].steps == expected
    assert messages == []


# ---------------------------------------------------------------- state and resume


@pytest.mark.parametrize("uneven", ["shortest", "longest"])
@pytest.mark.parametrize("saver", [0, 1])
@pytest.mark.parametrize("kind", ["sized", "unsized", "stream", "skipping"])
def test_a_state_dict_taken_on_any_process_resumes_all_of_them(
    kind: str, saver: int, uneven: str
) -> None:
    lengths = (9, 6)

    def make(rank: int, sync: ThreadSync) -> Loop[Any]:
        limits: dict[str, Any] = (
            {"max_epochs": 3} if kind != "stream" else {"max_steps": 50, "epoch_length": 4}
        )
        return Loop(make_data(kind, rank, [lengths[rank]]), sync=sync, uneven=uneven, **limits)

    assert_resumes_from_any_process(make, 2, every_n_steps=4, savers=[saver])


def assert_resumes_from_any_process(
    make: Callable[[int, ThreadSync], Loop[Any]],
    count: int,
    *,
    every_n_steps: int,
    cuts: Sequence[int] | None = None,
    savers: Sequence[int] | None = None,
) -> None:
    """A state dict taken by any process at any step resumes every process into the rest
    of the uninterrupted run: the same steps, events, batches and epoch lengths."""
    full, _ = quietly(lambda: run_processes(make, count, every_n_steps=every_n_steps))
    for cut in range(len(full[0].steps) - 1) if cuts is None else cuts:
        first, _ = quietly(
            partial(run_processes, make, count, every_n_steps=every_n_steps, until_step=cut)
        )
        for saver in range(count) if savers is None else savers:
            state = json.loads(json.dumps(first[saver].loop.state_dict()))

            def resumed(rank: int, sync: ThreadSync, state: Any = state) -> Loop[Any]:
                loop = make(rank, sync)
                loop.load_state_dict(state)
                return loop

            rest, _ = quietly(lambda: run_processes(resumed, count, every_n_steps=every_n_steps))
            for rank in range(count):
                where = (cut, saver, rank)
                assert rest[rank].steps == full[rank].steps[cut + 1 :], where
                assert rest[rank].batches == full[rank].batches[cut + 1 :], where
                assert rest[rank].epoch_lengths == full[rank].epoch_lengths[cut + 1 :], where


# ---------------------------------------------------------------- properties


@st.composite
def uneven_runs(draw: st.DrawFn) -> dict[str, Any]:
    count = draw(st.integers(2, 3))
    kind = draw(st.sampled_from(["sized", "unsized", "stream", "mixed"]))
    epochs = draw(st.integers(1, 3))
    lengths = [
        draw(st.lists(st.integers(1, 9), min_size=epochs, max_size=epochs)) for _ in range(count)
    ]
    return {
        "count": count,
        "kind": kind,
        "lengths": lengths,
        "epochs": epochs,
        "every": draw(st.integers(1, 5)),
        "uneven": draw(st.sampled_from(["shortest", "longest"])),
        "max_steps": draw(st.none() | st.integers(1, 30)),
        "cut": draw(st.integers(0, 30)),
        "saver": draw(st.integers(0, count - 1)),
    }


@given(uneven_runs())
def test_random_lengths_per_process_give_the_same_steps_and_events_everywhere(
    run: dict[str, Any],
) -> None:
    count, kind, lengths, epochs = run["count"], run["kind"], run["lengths"], run["epochs"]
    longest = run["uneven"] == "longest"
    pick = max if longest else min

    def data_kind(rank: int) -> str:
        return ("sized", "unsized")[rank % 2] if kind == "mixed" else kind

    def make(rank: int, sync: ThreadSync) -> Loop[Any]:
        stream = data_kind(rank) == "stream"
        return Loop(
            make_data(data_kind(rank), rank, lengths[rank]),
            max_epochs=1 if stream else epochs,
            max_steps=run["max_steps"] if not stream or run["max_steps"] else 100,
            sync=sync,
            uneven=run["uneven"],
        )

    traces, _ = quietly(lambda: run_processes(make, count, every_n_steps=run["every"]))
    # The same steps, events and epoch lengths on every process (padding aside).
    plain = [[(s, e, es, ev - {PADDING}) for s, e, es, ev in t.steps] for t in traces]
    assert all(p == plain[0] for p in plain)
    assert all(t.epoch_lengths == traces[0].epoch_lengths for t in traces)
    if run["cut"] < len(traces[0].steps) - 1:
        assert_resumes_from_any_process(
            make, count, every_n_steps=run["every"], cuts=[run["cut"]], savers=[run["saver"]]
        )
    # Epochs end where the shortest (longest) process's epoch ends.
    n_epochs = 1 if kind == "stream" else epochs
    agreed = [pick(lengths[rank][e] for rank in range(count)) for e in range(n_epochs)]
    ends = [sum(agreed[: e + 1]) - 1 for e in range(n_epochs)]
    limit = run["max_steps"] or 100
    expected_ends = [end for end in ends if end < limit]
    if kind == "stream":
        # As in one process (rule 24): on the step max_steps ends, the end of a stream is
        # not looked for, so it gives no EPOCH_END.
        expected_ends = [end for end in expected_ends if end != limit - 1]
    assert epoch_ends(traces[0]) == expected_ends
    assert len(traces[0].steps) == min(limit, sum(agreed))
    # Each process yields its own batches in order; padding where its epoch is shorter.
    for rank, trace in enumerate(traces):
        first = 0
        for epoch, length in enumerate(agreed):
            own = lengths[rank][epoch]
            got = trace.batches[first : first + length]
            want: list[Any] = [(rank, epoch, i) for i in range(min(own, length))]
            want += [None] * (length - len(want))
            assert got == want[: len(got)]
            first += length


# ---------------------------------------------------------------- resumes, after a review


def resumed_from_own_states(
    make: Callable[[int, ThreadSync], Loop[Any]], count: int, *, every_n_steps: int, at: int
) -> tuple[list[Trace], list[Trace]]:
    """The uninterrupted run, and the run resumed with each process's own state dict of
    step ``at`` (-1: of its last step)."""
    full, _ = quietly(
        lambda: run_processes(make, count, every_n_steps=every_n_steps, keep_states=at)
    )
    states = [trace.states[max(trace.states) if at == -1 else at] for trace in full]

    def resumed(rank: int, sync: ThreadSync) -> Loop[Any]:
        loop = make(rank, sync)
        loop.load_state_dict(states[rank])
        return loop

    rest, _ = quietly(lambda: run_processes(resumed, count, every_n_steps=every_n_steps))
    return full, rest


def test_an_at_time_that_fired_on_the_agreed_time_does_not_fire_again_on_a_lagging_process() -> (
    None
):
    def make(rank: int, sync: ThreadSync) -> Loop[Any]:
        clock = ManualClock(tick=(0.25, 1.0)[rank])
        return Loop(
            range(6), max_steps=6, sync=sync, clock=clock, events={"at": Event(at_time=1.0)}
        )

    full, rest = resumed_from_own_states(make, 2, every_n_steps=1, at=1)
    assert [step for step, *_, events in full[0].steps if "at" in events] == [0]
    assert rest[0].steps == rest[1].steps == full[0].steps[2:]


@pytest.mark.parametrize(("every", "at"), [(1, -1), (8, 4)])
def test_a_resume_with_max_seconds_ends_every_process_together(every: int, at: int) -> None:
    """Whether a resumed run has time left is decided on the agreed elapsed time: a
    process that would judge by its own (shorter) one would wait for the others."""

    def make(rank: int, sync: ThreadSync) -> Loop[Any]:
        clock = ManualClock(tick=(0.5, 3.0)[rank] if every == 1 else (1.0, 3.0)[rank])
        return Loop(range(50), max_seconds=12, sync=sync, clock=clock)

    full, rest = resumed_from_own_states(make, 2, every_n_steps=every, at=at)
    assert full[0].steps == full[1].steps
    assert rest[0].steps == rest[1].steps  # no hang: both went on, or neither did


@pytest.mark.parametrize(("uneven", "every"), [("shortest", 3), ("longest", 1)])
def test_a_run_whose_one_shot_data_ended_stays_ended_on_every_process(
    uneven: str, every: int
) -> None:
    def make(rank: int, sync: ThreadSync) -> Loop[Any]:
        return Loop(iter(range((6, 4)[rank])), max_steps=11, sync=sync, uneven=uneven)

    full, rest = resumed_from_own_states(make, 2, every_n_steps=every, at=-1)
    assert TRAINING_END in full[0].steps[-1][3]
    assert rest[0].steps == rest[1].steps == []


def test_longest_checks_data_against_its_len_as_shortest_does() -> None:
    class Liar:
        """Says 3 batches and yields 5."""

        def __len__(self) -> int:
            return 3

        def __iter__(self) -> Iterator[int]:
            return iter(range(5))

    for count in (1, 2):

        def make(rank: int, sync: ThreadSync) -> Loop[Any]:
            return Loop(Liar(), max_epochs=2, sync=sync, uneven="longest")

        with pytest.raises(ValueError, match="more batches in epoch 0 than its len"):
            run_processes(make, count, every_n_steps=2)
