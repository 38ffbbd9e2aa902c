"""VMNS: the vanilla multi-task network with separate heads (section 4.2)."""

import keras
from keras import ops

from keras_monet.baselines import head_utils
from keras_monet.layers.head import check_positive_int
from keras_monet.layers.head import TaskHead


@keras.saving.register_keras_serializable(package="keras_monet")
class VMNS(TaskHead):
    """Vanilla multi-task network, separate heads: one MLP per task.

    For each task t, on the shared features:

    ```
    h_t = ReLU(BN(Dense(units)(features)))    # twice, task t's own weights
    p(y_t = 1 | x) = sigmoid(Dense(1)(h_t))
    ```

    Tasks are independent given the features; the loss is the sum over
    tasks of the binary cross-entropy. A drop-in replacement for
    `MONETHead` in `keras_monet.Sequential` / `MONETModel`.

    References:
        - [Tallec et al., Multi-Order Networks for Action Unit Detection](
          https://arxiv.org/abs/2202.00446), section 4.2 ("VMNS").

    Example:

    ```python
    model = keras_monet.Sequential(
        [keras.Input((2,)), keras.layers.Dense(64, activation="relu")]
    )
    model.add(keras_monet.baselines.VMNS(tasks=5))
    model.compile(optimizer="adam", metrics=["binary_accuracy"])
    model.fit(x, y, epochs=10)
    ```

    Args:
        tasks: int, the number of binary tasks T (one head each).
        units: int, the width of each head's two hidden Dense layers
            (default 64).
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
        self.heads = []
        for t in range(tasks):
            layers = []
            for i in range(2):
                layers.append(
                    keras.layers.Dense(
                        units, dtype=self.dtype_policy, name=f"task_{t}_dense_{i}"
                    )
                )
                layers.append(
                    keras.layers.BatchNormalization(
                        momentum=momentum,
                        dtype=self.dtype_policy,
                        name=f"task_{t}_batch_norm_{i}",
                    )
                )
            layers.append(
                keras.layers.Dense(
                    1, dtype=self.dtype_policy, name=f"task_{t}_output"
                )
            )
            self.heads.append(layers)

    def build(self, input_shape):
        for layers in self.heads:
            shape = tuple(input_shape)
            for layer in layers:
                layer.build(shape)
                if isinstance(layer, keras.layers.Dense):
                    shape = shape[:-1] + (layer.units,)
        self.built = True

    def logits(self, inputs, training=None):
        """Per-task logits, float32 `[B, T]`."""
        outputs = []
        for layers in self.heads:
            h = inputs
            for i in range(2):
                h = layers[2 * i](h)
                h = ops.relu(layers[2 * i + 1](h, training=training))
            outputs.append(layers[-1](h))
        return ops.cast(ops.concatenate(outputs, axis=-1), "float32")

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
