"""MONET's training objectives, per example (paper eqs. 17-20, 25).

Everything here is float32 and reduces over orders, never over the batch:
the training step weights and averages the `[B]` result.
"""

from keras import ops

OBJECTIVES = ("mixture", "expected")


def order_log_likelihood(labels, logits, task_weights=None, label_mask=None):
    """log p_sigma(y | x) of each (example, order), eq. 17 summed over tasks.

    Args:
        labels: `[B, T]` 0/1 labels, task order.
        logits: `[B, K, T]` teacher-forced logits, task order.
        task_weights: optional `[T]` per-task weights w_t.
        label_mask: optional `[B, T]`, 1 where a label is known; unknown
            labels add nothing.

    Returns:
        float32 `[B, K]`: -sum_t w_t BCE(y_t, sigmoid(logit_t)).
    """
    logits = ops.cast(logits, "float32")
    labels = ops.broadcast_to(
        ops.cast(labels, "float32")[:, None, :], ops.shape(logits)
    )
    bce = ops.binary_crossentropy(labels, logits, from_logits=True)
    if task_weights is not None:
        bce = bce * ops.cast(task_weights, "float32")
    if label_mask is not None:
        bce = bce * ops.cast(label_mask, "float32")[:, None, :]
    return -ops.sum(bce, axis=-1)


def mixture_loss(log_weights, log_likelihood):
    """Eq. 18 / 20: L_i = -log sum_m pi~_m p_sigma_m(y_i | x_i).

    Args:
        log_weights: `[B, K]` log pi~ of the orders each example uses.
        log_likelihood: `[B, K]` log p_sigma(y | x) of those orders.

    Returns:
        float32 `[B]`.
    """
    return -ops.logsumexp(log_weights + log_likelihood, axis=-1)


def expected_loss(log_weights, log_likelihood):
    """The pi~-weighted mean of the per-order losses (Jensen's upper bound).

    sum_m pi~_m L^sigma_m, the form the authors' AU runs trained with.

    Returns:
        float32 `[B]`.
    """
    return -ops.sum(ops.exp(log_weights) * log_likelihood, axis=-1)


def objective_loss(objective, log_weights, log_likelihood):
    """Dispatches on `objective`, one of `OBJECTIVES`."""
    if objective == "mixture":
        return mixture_loss(log_weights, log_likelihood)
    if objective == "expected":
        return expected_loss(log_weights, log_likelihood)
    raise ValueError(
        f"`objective` should be one of {OBJECTIVES}. Received: "
        f"`objective={objective!r}`."
    )
