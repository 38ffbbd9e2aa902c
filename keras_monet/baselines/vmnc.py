"""VMNC: the vanilla multi-task network with a common head (section 4.2)."""

import keras
from keras import ops

from keras_monet.baselines import head_utils
from keras_monet.layers.head import check_positive_int
from keras_monet.layers.head import TaskHead


@keras.saving.register_keras_serializable(package="keras_monet")
class VMNC(TaskHead):
    """Vanilla multi-task network, common head: all T tasks from one MLP.

    ```
    h = ReLU(BN(Dense(units)(features)))      # twice
    p(y_t = 1 | x) = sigmoid(Dense(T)(h))_t
    ```

    Tasks are predicted independently (no label dependency): the loss is
    the sum over tasks of the binary cross-entropy. A drop-in replacement
    for `MONETHead` in `keras_monet.Sequential` / `MONETModel`.

    References:
        - [Tallec et al., Multi-Order Networks for Action Unit Detection](
          https://arxiv.org/abs/2202.00446), section 4.2 ("VMNC").

    Example:

    ```python
    model = keras_monet.Sequential(
        [keras.Input((2,)), keras.layers.Dense(64, activation="relu")]
    )
    model.add(keras_monet.baselines.VMNC(tasks=5))
    model.compile(optimizer="adam", metrics=["binary_accuracy"])
    model.fit(x, y, epochs=10)
    ```

    Args:
        tasks: int, the number of binary tasks T.
        units: int, the width of the two hidden Dense layers (default 64).
        momentum: float, the batch normalisations' moving-average momentum
            (default 0.99, Keras's). The moving variance starts at 1; short
            runs on features of small variance want a lower momentum.
        **kwargs: base layer keyword arguments.

    Call arguments:
        inputs: `[B, D]` features.
        training: bool. In training, the head must run inside a MONET
            training step, which gives it the labels.

    Returns:
        float32 `[B, T]` probabilities, task order.
    """

    def __init__(self, tasks, units=64, momentum=0.99, **kwargs):
        super().__init__(**kwargs)
        check_positive_int("tasks", tasks)
        check_positive_int("units", units)
        head_utils.check_momentum(momentum)
        self.momentum = momentum
        self.tasks = tasks
        self.units = units
        self.hidden = []
        for i in range(2):
            self.hidden.append(
                (
                    keras.layers.Dense(
                        units, dtype=self.dtype_policy, name=f"dense_{i}"
                    ),
                    keras.layers.BatchNormalization(
                        momentum=momentum,
                        dtype=self.dtype_policy, name=f"batch_norm_{i}"
                    ),
                )
            )
        self.output_dense = keras.layers.Dense(
            tasks, dtype=self.dtype_policy, name="output_dense"
        )

    def build(self, input_shape):
        shape = tuple(input_shape)
        for dense, norm in self.hidden:
            dense.build(shape)
            shape = shape[:-1] + (self.units,)
            norm.build(shape)
        self.output_dense.build(shape)
        self.built = True

    def logits(self, inputs, training=None):
        """Per-task logits, float32 `[B, T]`."""
        h = inputs
        for dense, norm in self.hidden:
            h = ops.relu(norm(dense(h), training=training))
        return ops.cast(self.output_dense(h), "float32")

    def call(self, inputs, training=None):
        if training:
            context = self.training_context()
        logits = self.logits(inputs, training=training)
        if training:
            context.add_loss(
                head_utils.summed_bce(
                    context.labels, logits, context.label_mask
                )
            )
        return ops.sigmoid(logits)

    def get_config(self):
        config = super().get_config()
        config.update(
            {"tasks": self.tasks, "units": self.units, "momentum": self.momentum}
        )
        return config
