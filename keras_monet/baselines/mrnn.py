"""MRNN: one recurrent cell shared by all tasks, one fixed order (4.2)."""

import keras
import numpy as np
from keras import ops

from keras_monet.baselines import head_utils
from keras_monet.layers.head import check_positive_int
from keras_monet.layers.head import TaskHead
from keras_monet.layers.order_selector import validate_orders


@keras.saving.register_keras_serializable(package="keras_monet")
class MRNN(TaskHead):
    """Multi-task recurrent network: one GRU cell, one fixed task order.

    The classifier-chain RNN baseline of the paper. Unlike `MONETHead`, a
    single GRU cell is shared by all tasks, and the tasks are always taken
    in one order sigma (given, or drawn from `seed`):

    ```
    h_0 = ReLU(Dense(units)(features)),  y~_0 = 0
    h_i = GRU(h_{i-1}, LabelEmbedding(y~_{i-1} e_{sigma(i-1)}))
    p(y_sigma(i) = 1 | y_sigma(<i), x) = sigmoid(w_sigma(i) . h_i + b_sigma(i))
    ```

    with y~ = 2 y - 1 the signed previous label (the same label input as
    MONET) and one output unit per task. Training uses teacher forcing and
    the summed binary cross-entropy of the chain; inference is Monte-Carlo
    (Algorithm 1): L trajectories are sampled ancestrally and their
    per-task conditional probabilities averaged.

    References:
        - [Tallec et al., Multi-Order Networks for Action Unit Detection](
          https://arxiv.org/abs/2202.00446), section 4.2 ("MRNN"),
          Algorithm 1.

    Example:

    ```python
    model = keras_monet.Sequential(
        [keras.Input((2,)), keras.layers.Dense(64, activation="relu")]
    )
    model.add(keras_monet.baselines.MRNN(tasks=5, seed=0))  # random order
    model.compile(optimizer="adam", metrics=["binary_accuracy"])
    model.fit(x, y, epochs=10)
    model.layers[-1].order        # [T] list, step -> task
    ```

    Args:
        tasks: int, the number of binary tasks T.
        order: optional list of T ints, a permutation of `0..T-1` (step ->
            task). None draws one uniformly at random from `seed`.
        samples: int L, trajectories averaged at inference (Algorithm 1).
        units: int H, the compressed feature and GRU size.
        label_units: int, the previous-label embedding size.
        seed: int or None, seeds the drawn order and the sampling.
        **kwargs: base layer keyword arguments.

    Call arguments:
        inputs: `[B, D]` features.
        training: bool. In training, the head must run inside a MONET
            training step (teacher forcing).

    Returns:
        float32 `[B, T]` probabilities in task order: the teacher-forced
        conditionals in training, the Monte-Carlo marginals otherwise.
    """

    def __init__(
        self,
        tasks,
        order=None,
        samples=20,
        units=64,
        label_units=64,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_positive_int("tasks", tasks)
        check_positive_int("samples", samples)
        check_positive_int("units", units)
        check_positive_int("label_units", label_units)
        if order is None:
            order_array = np.random.default_rng(seed).permutation(tasks)
        else:
            if np.ndim(order) != 1:
                raise ValueError(
                    f"`order` should be a list of {tasks} task indices (one "
                    f"order). Received: `order={order}`."
                )
            order_array = validate_orders([list(order)], tasks)[0]
        self.tasks = tasks
        self._order_arg = None if order is None else [int(t) for t in order]
        self.order = [int(t) for t in order_array]
        self.samples = samples
        self.units = units
        self.label_units = label_units
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(
            None if seed is None else seed + 1
        )
        self.compression = keras.layers.Dense(
            units, activation="relu", dtype=self.dtype_policy, name="compression"
        )
        self.cell = keras.layers.GRUCell(
            units, dtype=self.dtype_policy, name="gru_cell"
        )

    def build(self, input_shape):
        self.compression.build(input_shape)
        self.cell.build((input_shape[0], self.label_units))
        t, e, h = self.tasks, self.label_units, self.units
        self.label_kernel = self.add_weight(
            name="label_kernel", shape=(t, e), initializer="glorot_uniform"
        )
        self.label_bias = self.add_weight(
            name="label_bias", shape=(e,), initializer="zeros"
        )
        self.output_kernel = self.add_weight(
            name="output_kernel", shape=(h, t), initializer="glorot_uniform"
        )
        self.output_bias = self.add_weight(
            name="output_bias", shape=(t,), initializer="zeros"
        )
        self.built = True

    def unroll(self, initial_state, labels=None, label_mask=None):
        """Runs the chain along `order` from h_0 `[N, H]`.

        Args:
            initial_state: `[N, H]`.
            labels: `[N, T]` 0/1 in task order (teacher forcing), or None to
                sample each step's label (ancestral sampling).
            label_mask: optional `[N, T]`, 1 where a label is known.

        Returns:
            float32 `[N, T]` in task order: logits with labels, else the
            sampled trajectories' conditional probabilities.
        """
        n = ops.shape(initial_state)[0]
        h = initial_state
        previous_task, previous_sign = None, None
        outputs = [None] * self.tasks
        for task in self.order:
            if previous_task is None:
                x = ops.broadcast_to(self.label_bias[None], (n, self.label_units))
            else:
                x = (
                    previous_sign[:, None] * self.label_kernel[previous_task]
                    + self.label_bias
                )
            h, _ = self.cell(x, [h])
            logit = ops.cast(
                ops.matmul(h, self.output_kernel[:, task : task + 1])[:, 0]
                + self.output_bias[task],
                "float32",
            )
            if labels is not None:
                outputs[task] = logit
                label = ops.cast(labels[:, task], "float32")
                sign = 2.0 * label - 1.0
                if label_mask is not None:
                    sign = sign * ops.cast(label_mask[:, task], "float32")
            else:
                probability = ops.sigmoid(logit)
                outputs[task] = probability
                noise = keras.random.uniform(
                    (n,), seed=self.seed_generator, dtype="float32"
                )
                sign = 2.0 * ops.cast(noise < probability, "float32") - 1.0
            previous_task = task
            previous_sign = ops.cast(sign, h.dtype)
        return ops.stack(outputs, axis=-1)

    def call(self, inputs, training=None):
        if training:
            context = self.training_context()
        initial_state = self.compression(inputs)
        if training:
            logits = self.unroll(
                initial_state, context.labels, context.label_mask
            )
            context.add_loss(
                head_utils.summed_bce(
                    context.labels, logits, context.label_mask
                )
            )
            return ops.sigmoid(logits)
        return self.predict_marginals(initial_state)

    def predict_marginals(self, initial_state, samples=None):
        """Algorithm 1 from h_0 `[B, H]`: mean of L sampled chains, `[B, T]`."""
        samples = samples or self.samples
        batch_size = ops.shape(initial_state)[0]
        tiled = ops.reshape(
            ops.broadcast_to(
                initial_state[:, None, :], (batch_size, samples, self.units)
            ),
            (-1, self.units),
        )
        probabilities = self.unroll(tiled)
        return ops.mean(
            ops.reshape(probabilities, (batch_size, samples, self.tasks)),
            axis=1,
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "tasks": self.tasks,
                "order": self.order,
                "samples": self.samples,
                "units": self.units,
                "label_units": self.label_units,
                "seed": self.seed,
            }
        )
        return config
