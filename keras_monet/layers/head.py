"""What every head (MONET and the baselines) shares: the training interface."""

import keras

from keras_monet import teacher_forcing


def check_positive_int(name, value):
    """Raises the error every head gives for a size that is not an int >= 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(
            f"`{name}` should be an integer >= 1. Received: `{name}={value}`."
        )


class TaskHead(keras.layers.Layer):
    """Base of heads that predict T binary tasks, `[B, D] -> [B, T]`.

    A head trains only inside a MONET training step: `training_context()`
    returns the step's `TeacherForcing` context (labels in, per-example loss
    out), or raises the error that tells the user which model class to use.
    Subclasses set `self.tasks`.
    """

    def training_context(self):
        """The active teacher-forcing context, with its labels checked."""
        context = teacher_forcing.current()
        if context is None:
            raise ValueError(
                f"{type(self).__name__} '{self.name}' was called for training "
                "without its labels. MONET trains with teacher forcing: build "
                "the model with `keras_monet.Sequential` or "
                "`keras_monet.MONETModel` (not `keras.Model` or "
                "`keras.Sequential`) so that its training step passes the "
                "labels to the head. For predictions, call with "
                "`training=False`."
            )
        labels = context.labels
        if labels.shape[-1] != self.tasks:
            raise ValueError(
                f"The labels should have one column per task: expected "
                f"{self.tasks} (`tasks`), received labels of shape "
                f"{tuple(labels.shape)}."
            )
        return context

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.tasks)

    def compute_output_spec(self, inputs, training=None):
        return keras.KerasTensor((inputs.shape[0], self.tasks), "float32")
