"""The small interface between MONET's training step and its heads.

A training step runs the forward pass inside `TeacherForcing(labels)`. A head
that finds an active context during a training call reads the labels from it
(teacher forcing) and hands back its per-example loss with `add_loss`. A head
called for training outside any context raises, so that a stock
`keras.Model.fit` can never silently train something else.
"""

import threading

_local = threading.local()


class TeacherForcing:
    """Context that carries the labels into a head's training call.

    Args:
        labels: `[B, T]` labels, 0/1, in task order.
        label_mask: optional `[B, T]`, 1 where a label is known.
    """

    def __init__(self, labels, label_mask=None):
        self.labels = labels
        self.label_mask = label_mask
        self.losses = []

    def add_loss(self, per_example_loss):
        """Called by a head: its `[B]` float32 loss for this batch."""
        self.losses.append(per_example_loss)

    def __enter__(self):
        stack = getattr(_local, "stack", [])
        stack.append(self)
        _local.stack = stack
        return self

    def __exit__(self, *exc):
        _local.stack.pop()
        return False


def current():
    """The innermost active `TeacherForcing` context, or None."""
    stack = getattr(_local, "stack", None)
    return stack[-1] if stack else None
