"""What every baseline head shares with `MONETHead`'s training interface."""

from keras import ops


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


def check_momentum(momentum):
    """The batch normalisations' momentum of VMNC / VMNS, in [0, 1)."""
    if not 0.0 <= momentum < 1.0:
        raise ValueError(
            "`momentum` (of the batch normalisation's moving statistics) "
            f"should be in [0, 1). Received: `momentum={momentum}`."
        )
