"""The oracle: MONET restricted to one given order (M = 1)."""

from keras_monet.layers.monet_head import MONETHead


def oracle(tasks, order=None, **kwargs):
    """A `MONETHead` whose only order is `order` (the identity by default).

    On the toy of section 4.1 the identity is the best order, so this is the
    ceiling MONET's order selection aims at (Table 2, "oracle").

    Example:

    ```python
    model.add(keras_monet.baselines.oracle(tasks=5))    # identity order
    ```

    Args:
        tasks: int T.
        order: optional list of T task indices (step -> task); default
            `range(T)`.
        **kwargs: any other `MONETHead` argument (`samples`, `units`, ...).

    Returns:
        A `keras_monet.MONETHead` with `orders=[order]`.

    Reference:
        [Tallec et al., Multi-Order Networks](https://arxiv.org/abs/2202.00446),
        section 4.3, Table 2.
    """
    if isinstance(tasks, bool) or not isinstance(tasks, int) or tasks < 1:
        raise ValueError(
            f"`tasks` should be an integer >= 1. Received: `tasks={tasks}`."
        )
    if "orders" in kwargs or "order_dropout" in kwargs:
        raise ValueError(
            "The oracle has exactly one order: pass `order=`, not "
            f"{sorted(k for k in kwargs if k in ('orders', 'order_dropout'))}."
        )
    if order is None:
        order = list(range(tasks))
    return MONETHead(tasks=tasks, orders=[list(order)], **kwargs)
