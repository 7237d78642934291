"""dloop with TensorFlow: a small Keras regressor trained with tf.GradientTape.

Run from a checkout, with tensorflow-cpu installed:  python examples/tensorflow_train.py

The loop is the README's: gradient accumulation every 4 steps, a log line every 64 steps,
a learning-rate decay at step 256, and a validation pass at the end of every epoch. The
data is a ``tf.data.Dataset``: the loop iterates it again (reshuffled) for each epoch and
takes the epoch length from ``len(dataset)``, its cardinality.
"""

from __future__ import annotations

import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported

import numpy as np
import numpy.typing as npt
import tensorflow as tf

from dloop import Event, Loop, LoopEvents

TRUE_WEIGHTS = np.array([1.5, -2.0, 0.5, 1.0], dtype=np.float32)
ACCUMULATE = 4
EPOCHS = 6


def make_dataset(samples: int, seed: int) -> tuple[npt.NDArray[np.float32], ...]:
    """Noisy samples of y = sin(2*x0) + x @ TRUE_WEIGHTS, as (x, y) arrays."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1.0, 1.0, size=(samples, 4)).astype(np.float32)
    y = np.sin(2.0 * x[:, 0]) + x @ TRUE_WEIGHTS + rng.normal(0.0, 0.05, size=samples)
    return x, y[:, None].astype(np.float32)


def mean_squared_error(model: tf.keras.Model, dataset: tf.data.Dataset) -> float:
    errors = [float(tf.reduce_mean(tf.square(model(x) - y))) for x, y in dataset]
    return sum(errors) / len(errors)


def main() -> None:
    tf.keras.utils.set_random_seed(0)
    train = (
        tf.data.Dataset.from_tensor_slices(make_dataset(2048, seed=0))
        .shuffle(2048, seed=0, reshuffle_each_iteration=True)
        .batch(32)
        .prefetch(tf.data.AUTOTUNE)
    )
    validation = tf.data.Dataset.from_tensor_slices(make_dataset(512, seed=1)).batch(256)
    model = tf.keras.Sequential(
        [
            tf.keras.Input(shape=(4,)),
            tf.keras.layers.Dense(32, activation="tanh"),
            tf.keras.layers.Dense(1),
        ]
    )
    optimizer = tf.keras.optimizers.Adam(learning_rate=0.01)
    variables = model.trainable_variables
    summed = [tf.Variable(tf.zeros_like(v), trainable=False) for v in variables]

    @tf.function
    def add_gradients(x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        """Forward and backward; the gradients are summed until the next update."""
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(x, training=True) - y))
        for total, gradient in zip(summed, tape.gradient(loss, variables), strict=True):
            total.assign_add(gradient / ACCUMULATE)
        return loss

    def apply_gradients() -> None:
        optimizer.apply_gradients(
            zip([total.read_value() for total in summed], variables, strict=True)
        )
        for total in summed:
            total.assign(tf.zeros_like(total))

    loop = Loop(
        train,
        max_epochs=EPOCHS,
        events={
            "Update": Event(every_n_steps=ACCUMULATE),
            "Log": Event(every_n_steps=64),
            "DecayLR": Event(at_step=256),
        },
    )
    print(
        f"training for {len(loop)} steps ({len(train)} batches x {EPOCHS} epochs), "
        f"an update every {ACCUMULATE} batches"
    )
    print(f"before training  validation mse {mean_squared_error(model, validation):.4f}")
    started = time.perf_counter()
    for (x, y), events in loop:
        loss = add_gradients(x, y)
        if "Update" in events:  # the optimizer step, once per 4 batches
            apply_gradients()
        if "DecayLR" in events:
            optimizer.learning_rate = float(optimizer.learning_rate) / 10
            print(
                f"step {loop.state.step:4d}  learning rate decayed to "
                f"{float(optimizer.learning_rate):.4g}"
            )
        if "Log" in events:
            state = loop.state
            print(
                f"step {state.step:4d}  epoch {state.epoch}  train loss {float(loss):.4f}  "
                f"progress {state.progress:.0%}"
            )
        if LoopEvents.EPOCH_END in events:
            print(
                f"epoch {loop.state.epoch} done  "
                f"validation mse {mean_squared_error(model, validation):.4f}"
            )

    print(
        f"{int(optimizer.iterations.numpy())} updates in "
        f"{time.perf_counter() - started:.1f} s; final validation mse "
        f"{mean_squared_error(model, validation):.4f}"
    )


if __name__ == "__main__":
    main()
