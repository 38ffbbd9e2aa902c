"""The toy multi-task dataset of the paper's section 4.1 (eq. 28, Figure 4)."""

import numpy as np


def make_toy(tasks, samples, seed=None):
    """Draws the toy: T binary tasks that are easiest in the identity order.

    `x ~ U([-1, 1]^2)` and only `x[0]` matters: task t (t = 1..T) is the t-th
    binary digit of `(x[0] + 1) / 2`. Task 1 is `x[0] >= 0`; each further task
    splits every interval of the previous one in two. Given tasks 1..t-1, task
    t is a single threshold; on its own it needs 2^t - 1 of them. (The printed
    eq. 28 has index typos; this is the reading that matches the text and
    Figure 4, see the method notes.)

    Args:
        tasks: int T >= 1.
        samples: int n >= 1.
        seed: int or None.

    Returns:
        `(x, y)`: float32 `[n, 2]` and float32 `[n, T]` of 0/1.

    Example:

    ```python
    x, y = keras_monet.datasets.make_toy(tasks=3, samples=500, seed=0)
    ```
    """
    for name, value in (("tasks", tasks), ("samples", samples)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(
                f"`{name}` should be an integer >= 1. Received: `{name}={value}`."
            )
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1.0, 1.0, size=(samples, 2)).astype("float32")
    position = (x[:, 0].astype("float64") + 1.0) / 2.0  # in [0, 1)
    digits = np.arange(1, tasks + 1)
    y = np.floor(position[:, None] * 2.0 ** digits[None, :]) % 2
    return x, y.astype("float32")


def make_toy_splits(tasks, seed=None, sizes=(500, 250, 250)):
    """Train / validation / test splits of the toy, 500 / 250 / 250 as in 4.1.

    Returns:
        `((x_train, y_train), (x_val, y_val), (x_test, y_test))`.
    """
    x, y = make_toy(tasks, sum(sizes), seed)
    cuts = np.cumsum(sizes)[:-1]
    return tuple(zip(np.split(x, cuts), np.split(y, cuts)))
