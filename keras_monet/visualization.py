"""Pictures of what MONET learned (needs matplotlib: `pip install keras-monet[plot]`)."""

import numpy as np
from keras import ops


def plot_soft_order(soft_order, path=None, task_names=None, title="Soft order"):
    """Draws a soft order Omega `[T, T]` (row = step, column = task).

    Args:
        soft_order: a `[T, T]` array, or a layer with `soft_order()` (a
            `MONETHead` or `OrderSelector`).
        path: where to write the PNG; None returns the figure only.
        task_names: optional T column labels.
        title: the figure's title.

    Returns:
        The matplotlib figure.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:  # pragma: no cover
        raise ImportError(
            "plot_soft_order needs matplotlib: `pip install keras-monet[plot]`."
        ) from error
    if hasattr(soft_order, "soft_order"):
        soft_order = soft_order.soft_order()
    omega = np.asarray(ops.convert_to_numpy(soft_order), dtype="float64")
    tasks = omega.shape[0]
    names = task_names or [f"task {t + 1}" for t in range(tasks)]
    size = max(3.0, 0.6 * tasks + 1.5)
    figure, axis = plt.subplots(figsize=(size + 1, size))
    image = axis.imshow(omega, vmin=0.0, vmax=1.0, cmap="viridis")
    axis.set_xticks(range(tasks), names, rotation=45, ha="right")
    axis.set_yticks(range(tasks), [f"step {i + 1}" for i in range(tasks)])
    axis.set_xlabel("task")
    axis.set_ylabel("step")
    axis.set_title(title)
    if tasks <= 12:
        for i in range(tasks):
            for j in range(tasks):
                axis.text(
                    j, i, f"{omega[i, j]:.2f}", ha="center", va="center",
                    color="black" if omega[i, j] > 0.5 else "white", fontsize=8,
                )
    figure.colorbar(image, ax=axis, fraction=0.046)
    figure.tight_layout()
    if path is not None:
        figure.savefig(path, dpi=120)
    plt.close(figure)
    return figure
