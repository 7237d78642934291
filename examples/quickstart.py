"""dloop quickstart: linear regression by SGD, standard library only.

Run from a checkout:  python examples/quickstart.py

The loop below is the README's: gradient accumulation every 4 steps, a log line every 100
steps, a learning-rate decay at step 600, a checkpoint every 0.01 seconds of training
time (and at the end), and a validation pass at the end of every epoch.
"""

from __future__ import annotations

import json
import random
import tempfile
from pathlib import Path

from dloop import Event, Loop, LoopEvents

Batch = list[tuple[list[float], float]]
TRUE_WEIGHTS = (3.0, -2.0)
TRUE_BIAS = 0.5


def make_batches(count: int, batch_size: int, seed: int) -> list[Batch]:
    """Noisy samples of y = 3*x0 - 2*x1 + 0.5, grouped into batches."""
    rng = random.Random(seed)
    batches = []
    for _ in range(count):
        batch = []
        for _ in range(batch_size):
            x = [rng.uniform(-1, 1), rng.uniform(-1, 1)]
            y = TRUE_WEIGHTS[0] * x[0] + TRUE_WEIGHTS[1] * x[1] + TRUE_BIAS + rng.gauss(0, 0.1)
            batch.append((x, y))
        batches.append(batch)
    return batches


def predict(params: list[float], x: list[float]) -> float:
    return params[0] * x[0] + params[1] * x[1] + params[2]


def mean_squared_error(params: list[float], batches: list[Batch]) -> float:
    errors = [(predict(params, x) - y) ** 2 for batch in batches for x, y in batch]
    return sum(errors) / len(errors)


def main() -> None:
    train = make_batches(count=200, batch_size=16, seed=0)
    validation = make_batches(count=20, batch_size=16, seed=1)
    params = [0.0, 0.0, 0.0]  # w0, w1, bias
    grads = [0.0, 0.0, 0.0]
    accumulate = 4
    learning_rate = 0.1
    checkpoint_dir = Path(tempfile.mkdtemp(prefix="dloop-quickstart-"))
    checkpoints = 0

    loop = Loop(
        train,
        max_epochs=5,
        events={
            "Update": Event(every_n_steps=accumulate),
            "Log": Event(every_n_steps=100),
            "DecayLR": Event(at_step=600),
            "Checkpoint": Event(every_n_seconds=0.01),
        },
    )
    print(f"training for {len(loop)} steps ({len(train)} batches x 5 epochs)")
    for batch, events in loop:
        # forward and backward: the gradient of the batch's mean squared error
        for x, y in batch:
            error = predict(params, x) - y
            for i, feature in enumerate((*x, 1.0)):
                grads[i] += 2 * error * feature / len(batch) / accumulate
        if "Update" in events:  # the optimizer step, once per 4 batches
            for i in range(3):
                params[i] -= learning_rate * grads[i]
                grads[i] = 0.0
        if "DecayLR" in events:
            learning_rate /= 10
            print(f"step {loop.state.step:4d}  learning rate decayed to {learning_rate:g}")
        if "Log" in events:
            state = loop.state
            print(
                f"step {state.step:4d}  epoch {state.epoch}  "
                f"train mse {mean_squared_error(params, [batch]):.4f}  "
                f"progress {state.progress:.0%}"
            )
        if LoopEvents.EPOCH_END in events:
            print(
                f"epoch {loop.state.epoch} done  "
                f"validation mse {mean_squared_error(params, validation):.4f}"
            )
        if "Checkpoint" in events or LoopEvents.TRAINING_END in events:
            checkpoint = {"params": params, "loop": loop.state_dict()}
            (checkpoint_dir / "checkpoint.json").write_text(json.dumps(checkpoint))
            checkpoints += 1

    w0, w1, bias = params
    print(f"learned y = {w0:.2f}*x0 {w1:+.2f}*x1 {bias:+.2f}  (true: 3*x0 -2*x1 +0.5)")
    print(f"{checkpoints} checkpoints written to {checkpoint_dir / 'checkpoint.json'}")


if __name__ == "__main__":
    main()
