"""What every baseline head shares with `MONETHead`'s training interface."""

from keras import ops

from keras_monet import teacher_forcing


def training_context(layer):
    """The active teacher-forcing context, or the same error as MONETHead.

    Args:
        layer: the head asking (named in the error).

    Returns:
        The `keras_monet.teacher_forcing.TeacherForcing` context.
    """
    context = teacher_forcing.current()
    if context is None:
        raise ValueError(
            f"{type(layer).__name__} '{layer.name}' was called for training "
            "without its labels. MONET heads and their baselines train with "
            "the labels of the training step: build the model with "
            "`keras_monet.Sequential` or `keras_monet.MONETModel` (not "
            "`keras.Model` or `keras.Sequential`) so that its training step "
            "passes the labels to the head. For predictions, call with "
            "`training=False`."
        )
    return context


def check_labels(layer, labels):
    """Raises a ValueError unless the labels have one column per task."""
    if labels.shape[-1] != layer.tasks:
        raise ValueError(
            f"The labels should have one column per task: expected "
            f"{layer.tasks} (`tasks`), received labels of shape "
            f"{tuple(labels.shape)}."
        )


def summed_bce(labels, logits, label_mask=None):
    """Per-example loss: sum over tasks of BCE-with-logits, float32 `[B]`.

    Args:
        labels: `[B, T]` 0/1.
        logits: `[B, T]` logits, task order.
        label_mask: optional `[B, T]`, 1 where a label is known.
    """
    logits = ops.cast(logits, "float32")
    bce = ops.binary_crossentropy(
        ops.cast(labels, "float32"), logits, from_logits=True
    )
    if label_mask is not None:
        bce = bce * ops.cast(label_mask, "float32")
    return ops.sum(bce, axis=-1)


def check_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(
            f"`{name}` should be an integer >= 1. Received: `{name}={value}`."
        )
